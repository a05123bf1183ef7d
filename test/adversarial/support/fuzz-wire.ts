/**
 * Socket-level fuzzing material for test/adversarial/fuzz.test.ts: generators of fuzzed
 * JSON-RPC traffic, an oracle that predicts from docs/protocol.md what the server must do with
 * it, and a raw-socket peer that sends a case and checks everything the server sends back.
 */

import net from 'node:net';
import fc from 'fast-check';
import { ACCOUNTS, APP, APP_VERSION, SECRET_DETAIL } from './fuzz-app.js';
import {
  concat,
  DEFAULT_LIMIT,
  frame,
  jsonValueArb,
  keyArb,
  objectFrom,
  type ReferenceOutcome,
  referenceDecode,
  textArb,
  utf8,
} from './fuzz-frames.js';

const LIMIT = DEFAULT_LIMIT;
const HELLO = 'bridgekeeper.hello';
const CANCEL = 'bridgekeeper.cancel';

// ---------------------------------------------------------------------------------------------
// Building messages

/** JSON text inserted verbatim (deeply nested values, which JSON.stringify cannot produce). */
export class RawJson {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text.length > 60
      ? `RawJson(${this.text.slice(0, 30)}…${this.text.length} chars)`
      : `RawJson(${this.text})`;
  }
}

/** Placeholders for request ids, resolved per case so that only deliberate duplicates repeat. */
export class FreshId {
  constructor(readonly type: 'int' | 'string') {}
}
export class ReuseId {
  constructor(readonly which: number) {}
}

/** Serializes like JSON.stringify, with RawJson spliced in and own `__proto__` keys kept. */
export function toJsonText(value: unknown): string {
  if (value instanceof RawJson) return value.text;
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : toJsonText(item))).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const parts: string[] = [];
    for (const key of Object.keys(value)) {
      const item = (value as Record<string, unknown>)[key];
      if (item !== undefined) parts.push(`${JSON.stringify(key)}:${toJsonText(item)}`);
    }
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** One thing a fuzz case sends: a message (framed by the runner) or ready-made bytes. */
export type WireItem =
  | { kind: 'message'; message: unknown }
  | { kind: 'bytes'; bytes: Uint8Array; note: string };

const framed = new WeakMap<WireItem, Uint8Array>();

export function itemBytes(item: WireItem): Uint8Array {
  if (item.kind === 'bytes') return item.bytes;
  let bytes = framed.get(item);
  if (bytes === undefined) {
    bytes = frame(utf8(toJsonText(item.message)));
    framed.set(item, bytes);
  }
  return bytes;
}

export function describeItem(item: WireItem): string {
  if (item.kind === 'bytes') return `<${item.note}>`;
  const text = toJsonText(item.message);
  return text.length > 300
    ? `${text.slice(0, 200)}…(${text.length} chars)…${text.slice(-60)}`
    : text;
}

/** Builds a message object from entries (so `__proto__` can be a key), leaving out undefined values. */
function message(entries: readonly (readonly [string, unknown])[]): Record<string, unknown> {
  return objectFrom(entries.filter(([, value]) => value !== undefined));
}

// ---------------------------------------------------------------------------------------------
// Generators

const OMIT = undefined;
type Entries = (readonly [string, unknown])[];

/** Envelope versions other than "2.0". */
const badJsonrpcArb = fc.constantFrom<unknown>(
  '1.0',
  '2',
  2,
  2.0,
  null,
  '',
  ' 2.0',
  '2.0\u0000',
  OMIT,
  ['2.0'],
  { v: '2.0' },
);

/** Request ids that are valid, some at the edges (empty, 256 characters, the largest safe integers). */
const validIdArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(new FreshId('int'), new FreshId('string')) },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
      textArb,
    ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(
      0,
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      '',
      'x'.repeat(256),
      '__proto__',
      'constructor',
      '1',
    ),
  },
  { weight: 2, arbitrary: fc.nat(7).map((which) => new ReuseId(which)) },
);

/** Values that are not request ids. */
const badIdArb = fc.constantFrom<unknown>(
  null,
  true,
  1.5,
  -0.5,
  2 ** 53,
  -(2 ** 53),
  1e300,
  'x'.repeat(257),
  '😀'.repeat(200),
  [],
  [1],
  {},
  { id: 1 },
);

const deepArb = fc
  .tuple(
    fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(3, 40, 400, 20_000) },
      { weight: 1, arbitrary: fc.constant(100_000) },
    ),
    fc.constantFrom('array', 'object'),
  )
  .map(([depth, shape]) =>
    shape === 'array'
      ? new RawJson(`${'['.repeat(depth)}${']'.repeat(depth)}`)
      : new RawJson(`${'{"a":'.repeat(depth)}null${'}'.repeat(depth)}`),
  );

/** A string so long that the frame holding it lands just under, at, or just over the limit. */
const hugeStringArb = fc
  .oneof(
    fc.integer({ min: 10_000, max: 200_000 }),
    fc.integer({ min: LIMIT - 260, max: LIMIT + 20 }),
  )
  .map((length) => 'x'.repeat(length));

/** Object entries that would pollute a prototype if merged carelessly. */
const pollutingEntriesArb = fc.constantFrom<Entries>(
  [
    [
      '__proto__',
      { polluted: 'yes', account: 'work', protocol: { min: 1, max: 1 }, client: { name: 'p' } },
    ],
  ],
  [['constructor', { prototype: { polluted: 'yes' } }]],
  [['prototype', { polluted: 'yes' }]],
  [['__proto__', null]],
  [['__proto__', []]],
);

/** Params of a well-formed request: absent, an object or an array, including deep, huge and polluting ones. */
const validParamsArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(OMIT) },
  {
    weight: 6,
    arbitrary: fc
      .array(fc.tuple(keyArb, jsonValueArb), { maxLength: 4 })
      .map((entries) => objectFrom(entries)),
  },
  { weight: 2, arbitrary: fc.array(jsonValueArb, { maxLength: 4 }) },
  { weight: 1, arbitrary: deepArb.map((deep) => objectFrom([['deep', deep]])) },
  { weight: 1, arbitrary: deepArb },
  { weight: 1, arbitrary: hugeStringArb.map((blob) => ({ blob })) },
  { weight: 1, arbitrary: pollutingEntriesArb.map((entries) => objectFrom(entries)) },
);

/** Params that are neither an object nor an array. */
const badParamsArb = fc.constantFrom<unknown>(null, 0, 'params', true, false, -1.5);

const accountParamsArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.oneof(
          fc.constantFrom(
            'work',
            'home',
            'denied',
            '__proto__',
            'constructor',
            'toString',
            'hasOwnProperty',
            'nope',
            '',
          ),
          fc.nat(260).map((n) => `acct-${n}`),
          textArb,
        ),
        fc.array(fc.tuple(keyArb, jsonValueArb), { maxLength: 2 }),
      )
      .map(([account, extra]) =>
        objectFrom([...extra.filter(([key]) => key !== 'account'), ['account', account]]),
      ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(
      OMIT,
      [],
      ['work'],
      { account: 5 },
      { account: null },
      { Account: 'work' },
    ),
  },
  { weight: 1, arbitrary: pollutingEntriesArb.map((entries) => objectFrom(entries)) },
);

const REGISTERED = ['fuzz.echo', 'fuzz.account', 'fuzz.wait', 'fuzz.fail', 'fuzz.app-error'];
const RESERVED = [
  CANCEL,
  'bridgekeeper.prompt',
  'bridgekeeper.queued',
  'bridgekeeper.closing',
  'bridgekeeper.',
  'bridgekeeper.unknown',
  'Bridgekeeper.hello',
  'bridgekeeper.hello ',
];
const PROTOTYPE_NAMES = [
  'toString',
  'constructor',
  '__proto__',
  'hasOwnProperty',
  'valueOf',
  'fuzz.echo.constructor',
];

/** Method names a request may carry (1–256 characters), registered or not. */
const validMethodArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...REGISTERED) },
  { weight: 2, arbitrary: fc.constantFrom(...RESERVED) },
  { weight: 1, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('m'.repeat(255), 'm'.repeat(256), 'fuzz.echo ', 'FUZZ.ECHO'),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 16 }) },
);

/** Method members that are not valid: empty, too long, not strings. */
const badMethodArb = fc.constantFrom<unknown>('', 'm'.repeat(257), 5, null, true, ['fuzz.echo'], {
  name: 'fuzz.echo',
});

function request(
  jsonrpc: unknown,
  id: unknown,
  method: unknown,
  params: unknown,
  extra: boolean,
): Record<string, unknown> {
  return message([
    ['jsonrpc', jsonrpc],
    ['id', id],
    ['method', method],
    ['params', params],
    ...(extra ? ([['x-extra', { note: 'unknown member' }]] as const) : []),
  ]);
}

/** A well-formed app request: any id, method and params a client may send. */
const requestArb = fc
  .tuple(validIdArb, validMethodArb, fc.boolean())
  .chain(([id, method, extra]) =>
    (method === 'fuzz.account' ? accountParamsArb : validParamsArb).map((params) =>
      request('2.0', id, method, params, extra),
    ),
  );

/** A request with exactly one part of its envelope broken. */
const brokenRequestArb = fc.oneof(
  fc
    .tuple(badJsonrpcArb, validIdArb, validMethodArb)
    .map(([jsonrpc, id, method]) => request(jsonrpc, id, method, OMIT, false)),
  fc.tuple(badIdArb, validMethodArb).map(([id, method]) => request('2.0', id, method, OMIT, false)),
  fc.tuple(validIdArb, badMethodArb).map(([id, method]) => request('2.0', id, method, OMIT, false)),
  fc
    .tuple(validIdArb, validMethodArb, badParamsArb)
    .map(([id, method, params]) => request('2.0', id, method, params, false)),
);

/** Well-formed notifications: cancels with real and bogus ids, unknown and reserved names. */
const notificationArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .oneof(
        { weight: 3, arbitrary: fc.nat(7).map((which): unknown => new ReuseId(which)) },
        { weight: 2, arbitrary: badIdArb },
        {
          weight: 1,
          arbitrary: fc.oneof(
            fc.integer(),
            textArb,
            fc.constantFrom<unknown>('probe', 'final-hello'),
          ),
        },
      )
      .chain((id) =>
        fc.constantFrom<unknown>({ id }, { id, extra: 1 }, [id], OMIT, {}).map((params) =>
          message([
            ['jsonrpc', '2.0'],
            ['method', CANCEL],
            ['params', params],
          ]),
        ),
      ),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(validMethodArb, validParamsArb).map(([method, params]) =>
      message([
        ['jsonrpc', '2.0'],
        ['method', method],
        ['params', params],
      ]),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(HELLO, 'bridgekeeper.prompt', 'bridgekeeper.closing').map((method) =>
      message([
        ['jsonrpc', '2.0'],
        ['method', method],
        ['params', { protocol: { min: 1, max: 1 }, client: { name: 'as a notification' } }],
      ]),
    ),
  },
);

/** A notification with its envelope broken. */
const brokenNotificationArb = fc.oneof(
  fc.tuple(badJsonrpcArb, validMethodArb).map(([jsonrpc, method]) =>
    message([
      ['jsonrpc', jsonrpc],
      ['method', method],
    ]),
  ),
  badMethodArb.map((method) =>
    message([
      ['jsonrpc', '2.0'],
      ['method', method],
    ]),
  ),
  badParamsArb.map((params) =>
    message([
      ['jsonrpc', '2.0'],
      ['method', CANCEL],
      ['params', params],
    ]),
  ),
);

/** Responses, from a client, which may not send any. */
const responseArb = fc
  .tuple(
    fc.oneof(validIdArb, badIdArb),
    fc.oneof(
      jsonValueArb.map((result): Entries => [['result', result]]),
      fc
        .tuple(fc.oneof(fc.integer(), fc.constant('x')), fc.oneof(textArb, fc.constant(5)))
        .map(
          ([code, text]): Entries => [['error', { code, message: text, data: { code: 'ERR_X' } }]],
        ),
      fc.constant<Entries>([
        ['result', null],
        ['error', null],
      ]),
    ),
  )
  .map(([id, body]) => message([['jsonrpc', '2.0'], ['id', id], ...body]));

/** Objects that are none of the above. */
const junkObjectArb = fc.oneof(
  fc.array(fc.tuple(keyArb, jsonValueArb), { maxLength: 4 }).map((entries) => objectFrom(entries)),
  fc.constantFrom<unknown>(
    {},
    { jsonrpc: '2.0' },
    { jsonrpc: '2.0', id: 1 },
    { jsonrpc: '2.0', params: {} },
    { method: HELLO },
  ),
);

/** Frames a server must refuse at the framing level. */
const badFrameArb = fc.oneof(
  fc.constantFrom<WireItem>(
    { kind: 'bytes', bytes: frame(new Uint8Array(0), LIMIT + 1), note: 'declares limit + 1 bytes' },
    { kind: 'bytes', bytes: frame(new Uint8Array(0), 0xffff_ffff), note: 'declares 4 GiB' },
    { kind: 'bytes', bytes: frame(new Uint8Array(0)), note: 'empty frame' },
    {
      kind: 'bytes',
      bytes: frame(Uint8Array.from([0x7b, 0x22, 0xc0, 0x80, 0x22, 0x3a, 0x31, 0x7d])),
      note: 'overlong UTF-8',
    },
    { kind: 'bytes', bytes: frame(Uint8Array.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), note: 'BOM' },
    { kind: 'bytes', bytes: frame(utf8('{"jsonrpc":"2.0",')), note: 'truncated JSON' },
    { kind: 'bytes', bytes: frame(utf8('null')), note: 'null' },
  ),
  fc.array(requestArb, { minLength: 0, maxLength: 3 }).map(
    (batch): WireItem => ({
      kind: 'bytes',
      bytes: frame(utf8(`[${batch.map(toJsonText).join(',')}]`)),
      note: 'a batch',
    }),
  ),
  jsonValueArb
    .filter((value) => typeof value !== 'object' || value === null || Array.isArray(value))
    .map(
      (value): WireItem => ({
        kind: 'bytes',
        bytes: frame(utf8(JSON.stringify(value))),
        note: `top level ${JSON.stringify(value).slice(0, 30)}`,
      }),
    ),
);

export const VALID_HELLO_PARAMS = {
  protocol: { min: 1, max: 1 },
  client: { name: 'fuzzer', version: '0.0.1' },
};

export function validHello(id: unknown): Record<string, unknown> {
  return { jsonrpc: '2.0', id, method: HELLO, params: VALID_HELLO_PARAMS };
}

const versionArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -2, max: 4 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      1.5,
      '1',
      null,
      true,
      [1],
      {},
      OMIT,
    ),
  },
);

const claimStringArb = fc.oneof(
  { weight: 6, arbitrary: textArb },
  { weight: 1, arbitrary: hugeStringArb },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(5, null, false, [], { name: 'x' }) },
);

/** Hello params: every member missing, extra, wrong-typed, huge, or polluting. */
const helloParamsArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc
      .record({
        protocol: fc.oneof(
          { weight: 3, arbitrary: fc.constant({ min: 1, max: 1 }) },
          {
            weight: 3,
            arbitrary: fc.tuple(versionArb, versionArb).map(([min, max]) =>
              message([
                ['min', min],
                ['max', max],
              ]),
            ),
          },
          {
            weight: 1,
            arbitrary: fc.constantFrom<unknown>(
              OMIT,
              null,
              1,
              '1',
              [1, 1],
              { min: 1 },
              { max: 1 },
              { versions: [1] },
            ),
          },
        ),
        client: fc.oneof(
          { weight: 3, arbitrary: fc.constant({ name: 'fuzzer' }) },
          {
            weight: 3,
            arbitrary: fc
              .tuple(claimStringArb, fc.option(claimStringArb, { nil: OMIT }), fc.boolean())
              .map(([name, version, extra]) =>
                message([
                  ['name', name],
                  ['version', version],
                  ...(extra ? ([['pid', 1]] as const) : []),
                ]),
              ),
          },
          {
            weight: 1,
            arbitrary: fc.constantFrom<unknown>(OMIT, null, 'fuzzer', [], { version: '1' }),
          },
        ),
        reason: fc.option(claimStringArb, { nil: OMIT }),
        extra: fc.oneof(
          { weight: 4, arbitrary: fc.constant<Entries>([]) },
          { weight: 1, arbitrary: pollutingEntriesArb },
          {
            weight: 1,
            arbitrary: fc.constant<Entries>([
              ['session', { id: 'tty:forged', scope: 'terminal' }],
              ['pid', 1],
              ['uid', 0],
            ]),
          },
          { weight: 1, arbitrary: deepArb.map((deep): Entries => [['deep', deep]]) },
        ),
      })
      .map(({ protocol, client, reason, extra }) =>
        message([['protocol', protocol], ['client', client], ['reason', reason], ...extra]),
      ),
  },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(OMIT, [], [VALID_HELLO_PARAMS]) },
  { weight: 1, arbitrary: pollutingEntriesArb.map((entries) => objectFrom(entries)) },
);

/** A hello: mostly a well-formed envelope with fuzzed params; sometimes a broken envelope. */
const helloArb = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .tuple(validIdArb, helloParamsArb, fc.boolean())
      .map(([id, params, extra]) => request('2.0', id, HELLO, params, extra)),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.oneof(badJsonrpcArb, fc.constant('2.0')),
        fc.oneof(validIdArb, badIdArb),
        fc.oneof(fc.constant(HELLO), badMethodArb),
        fc.oneof(helloParamsArb, badParamsArb),
      )
      .map(([jsonrpc, id, method, params]) => request(jsonrpc, id, method, params, false)),
  },
);

const asItem = (value: unknown): WireItem => ({ kind: 'message', message: value });

/** Anything that makes the server close the connection (after a hello, or before it). */
const breakingItemArb: fc.Arbitrary<WireItem> = fc.oneof(
  { weight: 3, arbitrary: brokenRequestArb.map(asItem) },
  { weight: 1, arbitrary: brokenNotificationArb.map(asItem) },
  { weight: 1, arbitrary: responseArb.map(asItem) },
  { weight: 1, arbitrary: junkObjectArb.map(asItem) },
  { weight: 1, arbitrary: helloArb.map(asItem) },
  { weight: 1, arbitrary: badFrameArb },
);

/** Traffic aimed at the handshake: a few things first, a (fuzzed) hello, a few things after. */
export const handshakeItemsArb: fc.Arbitrary<WireItem[]> = fc
  .tuple(
    fc.array(
      fc.oneof(
        { weight: 4, arbitrary: notificationArb.map(asItem) },
        { weight: 1, arbitrary: requestArb.map(asItem) },
        { weight: 1, arbitrary: breakingItemArb },
      ),
      {
        maxLength: 2,
      },
    ),
    fc.oneof(
      { weight: 6, arbitrary: helloArb.map(asItem) },
      { weight: 1, arbitrary: fc.constant(asItem(validHello(new FreshId('int')))) },
    ),
    fc.array(
      fc.oneof(
        { weight: 3, arbitrary: requestArb.map(asItem) },
        { weight: 2, arbitrary: notificationArb.map(asItem) },
        { weight: 1, arbitrary: breakingItemArb },
      ),
      {
        maxLength: 2,
      },
    ),
  )
  .map(([before, hello, after]) => [...before, hello, ...after]);

/** Traffic after a valid hello: well-formed requests and notifications, sometimes one that breaks the connection. */
export const sessionItemsArb: fc.Arbitrary<WireItem[]> = fc
  .tuple(
    fc.array(
      fc.oneof(
        { weight: 3, arbitrary: requestArb.map(asItem) },
        { weight: 1, arbitrary: notificationArb.map(asItem) },
      ),
      { maxLength: 8 },
    ),
    fc.oneof(
      { weight: 2, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: breakingItemArb },
    ),
    fc.array(fc.oneof(requestArb.map(asItem), notificationArb.map(asItem)), { maxLength: 2 }),
  )
  .map(([first, breaking, after]) => [
    asItem(validHello(new FreshId('int'))),
    ...first,
    ...(breaking ? [breaking] : []),
    ...after,
  ]);

// ---------------------------------------------------------------------------------------------
// Resolving ids

/** Whether two request ids are the same key (as a Map compares them). */
const sameId = (a: unknown, b: unknown): boolean => a === b || (Number.isNaN(a) && Number.isNaN(b));

function isRequestId(value: unknown): value is string | number {
  return (
    (typeof value === 'string' && value.length <= 256) ||
    (typeof value === 'number' && Number.isSafeInteger(value))
  );
}

/**
 * Replaces id placeholders: fresh ids are unique in the case; a reuse names an earlier
 * request's id, kept only when that request is a `fuzz.wait` still waiting (a deterministic
 * duplicate), otherwise made fresh; a cancel's reuse names any earlier request. Any valid id
 * that would repeat by chance is made fresh, since a repeat of a quick request's id races with
 * its answer. `reserved` ids (the runner's own) are never produced.
 */
export function resolveIds(
  items: readonly WireItem[],
  reserved: readonly unknown[],
  caseNumber: number,
): WireItem[] {
  let counter = 0;
  const fresh = (type: 'int' | 'string'): string | number =>
    type === 'int' ? caseNumber * 1000 + 100 + counter++ : `c${caseNumber}-r${counter++}`;
  const used: unknown[] = [...reserved];
  const requests: { id: unknown; waiting: boolean }[] = [];
  const isUsed = (id: unknown) => used.some((other) => sameId(other, id));
  return items.map((item) => {
    if (
      item.kind !== 'message' ||
      typeof item.message !== 'object' ||
      item.message === null ||
      Array.isArray(item.message)
    )
      return item;
    const original = item.message as Record<string, unknown>;
    const copy = objectFrom(Object.entries(original));
    const isCancel = original.method === CANCEL && !Object.hasOwn(original, 'id');
    if (isCancel) {
      const params = original.params;
      const target = (value: unknown) => {
        if (!(value instanceof ReuseId)) return value;
        if (requests.length === 0) return fresh('int');
        const request = requests[value.which % requests.length]!;
        request.waiting = false;
        return request.id;
      };
      if (Array.isArray(params)) copy.params = params.map(target);
      else if (typeof params === 'object' && params !== null && Object.hasOwn(params, 'id')) {
        copy.params = objectFrom(
          Object.entries(params).map(([key, value]) => [key, key === 'id' ? target(value) : value]),
        );
      }
      return { kind: 'message', message: copy };
    }
    if (!Object.hasOwn(original, 'id')) return item;
    let id = original.id;
    if (id instanceof ReuseId) {
      const waiting = requests.filter((request) => request.waiting);
      id = waiting.length > 0 ? waiting[id.which % waiting.length]!.id : new FreshId('string');
    } else if (isRequestId(id) && isUsed(id)) {
      id = new FreshId(typeof id === 'number' ? 'int' : 'string');
    }
    if (id instanceof FreshId) id = fresh(id.type);
    copy.id = id;
    if (isRequestId(id)) {
      used.push(id);
      requests.push({ id, waiting: original.method === 'fuzz.wait' });
    }
    return { kind: 'message', message: copy };
  });
}

// ---------------------------------------------------------------------------------------------
// The oracle

/** What the server sent back, as received. */
export type Received = Record<string, unknown>;

/** A request the server may or must answer. */
export interface ExpectedAnswer {
  id: string | number;
  item: number;
  what: string;
  /** Undefined when `response` is an acceptable answer; otherwise why not. */
  judge: (response: Received) => string | undefined;
  /** Must be answered (before the case ends). */
  mandatory: boolean;
  /** Prompt notices may name it, for this account. */
  account?: string;
}

export interface Prediction {
  answers: ExpectedAnswer[];
  /** The server closes the connection after this item. */
  close?: { item: number; kind: 'protocol' | 'frame'; code: string; noticeRequired: boolean };
  endState: 'awaiting-hello' | 'ready' | 'closed';
}

export interface OracleContext {
  session: { id: string; scope: string };
}

type Classified =
  | { kind: 'request'; id: string | number; method: string; params: unknown }
  | { kind: 'notification'; method: string; params: unknown }
  | { kind: 'other'; why: string };

/** docs/protocol.md §3: what a message is. */
function classify(m: Record<string, unknown>): Classified {
  if (m.jsonrpc !== '2.0') return { kind: 'other', why: 'jsonrpc is not "2.0"' };
  if (Object.hasOwn(m, 'method')) {
    const method = m.method;
    if (typeof method !== 'string' || method.length < 1 || method.length > 256)
      return { kind: 'other', why: 'bad method' };
    const params = m.params;
    if (Object.hasOwn(m, 'params') && (typeof params !== 'object' || params === null))
      return { kind: 'other', why: 'bad params' };
    if (!Object.hasOwn(m, 'id')) return { kind: 'notification', method, params };
    if (!isRequestId(m.id)) return { kind: 'other', why: 'bad id' };
    return { kind: 'request', id: m.id, method, params };
  }
  return { kind: 'other', why: 'a response, or nothing recognizable' };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A judge that accepts an error with this JSON-RPC code and one of these data.codes. */
function expectError(
  rpc: number,
  codes: readonly string[],
  extra?: (error: Record<string, unknown>) => string | undefined,
) {
  return (response: Received): string | undefined => {
    if (!Object.hasOwn(response, 'error'))
      return `expected error ${codes.join('|')}, got ${short(response)}`;
    const error = response.error as Record<string, unknown>;
    const data = error.data as Record<string, unknown>;
    if (error.code !== rpc || !codes.includes(data.code as string)) {
      return `expected error ${rpc}/${codes.join('|')}, got ${error.code}/${String(data.code)}`;
    }
    return extra?.(error);
  };
}

function expectResult(json: string) {
  return (response: Received): string | undefined => {
    if (!Object.hasOwn(response, 'result'))
      return `expected result ${json.slice(0, 200)}, got ${short(response)}`;
    const got = JSON.stringify(response.result);
    return got === json
      ? undefined
      : `expected result ${json.slice(0, 200)}, got ${got.slice(0, 200)}`;
  };
}

const either =
  (...judges: ((response: Received) => string | undefined)[]) =>
  (response: Received): string | undefined => {
    const verdicts = judges.map((judge) => judge(response));
    return verdicts.includes(undefined) ? undefined : verdicts.join(' / or / ');
  };

export function short(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/** How the echo method's answer to `params` must look: its result, or ERR_INTERNAL if it cannot be sent. */
function echoJudge(id: string | number, params: unknown) {
  const result = { params: params === undefined ? null : params };
  let json: string | undefined;
  try {
    json = JSON.stringify(result);
  } catch {
    json = undefined; // too deep to serialize: the server cannot either
  }
  const internal = expectError(-32603, ['ERR_INTERNAL']);
  if (json === undefined) return internal;
  const responseBytes = Buffer.byteLength(
    JSON.stringify({ jsonrpc: '2.0', id, result: JSON.parse(json) }),
  );
  return responseBytes > LIMIT ? internal : expectResult(json);
}

/** JSON with keys sorted at every level, to compare objects whatever their key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isPlainObject(value)) {
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}

function helloJudge(context: OracleContext) {
  return (response: Received): string | undefined => {
    if (!Object.hasOwn(response, 'result'))
      return `expected a hello result, got ${short(response)}`;
    const want = {
      protocol: 1,
      server: { name: APP, version: APP_VERSION },
      // The server's own placement, the same as the well-behaved client's: never a claim.
      session: { id: context.session.id, scope: context.session.scope },
      limits: { maxFrameBytes: LIMIT },
    };
    return canonical(response.result) === canonical(want)
      ? undefined
      : `hello result ${short(response.result)}, expected ${short(want)}`;
  };
}

/** docs/protocol.md §4: whether hello params are well formed, and whether the versions meet. */
function checkHello(params: unknown): 'ok' | 'malformed' | 'unsupported' {
  if (!isPlainObject(params)) return 'malformed';
  const { protocol, client, reason } = params;
  if (!isPlainObject(protocol) || !isPlainObject(client)) return 'malformed';
  if (!Number.isSafeInteger(protocol.min) || !Number.isSafeInteger(protocol.max))
    return 'malformed';
  if (typeof client.name !== 'string') return 'malformed';
  if (Object.hasOwn(client, 'version') && typeof client.version !== 'string') return 'malformed';
  if (Object.hasOwn(params, 'reason') && typeof reason !== 'string') return 'malformed';
  return (protocol.min as number) <= 1 && 1 <= (protocol.max as number) ? 'ok' : 'unsupported';
}

/** What an app method must answer (the app is in fuzz-app.ts). */
function appJudge(
  id: string | number,
  method: string,
  params: unknown,
): { judge: ExpectedAnswer['judge']; account?: string } {
  switch (method) {
    case 'fuzz.echo':
      return { judge: echoJudge(id, params) };
    case 'fuzz.account': {
      const account = isPlainObject(params) ? params.account : undefined;
      if (typeof account !== 'string')
        return { judge: expectError(-32602, ['ERR_INVALID_PARAMS']) };
      if (!ACCOUNTS.has(account)) return { judge: expectError(-32000, ['ACCOUNT_NOT_FOUND']) };
      if (account === 'denied') {
        return {
          account,
          judge: expectError(
            -32001,
            ['ERR_AUTHORIZATION_DENIED', 'ERR_AUTHORIZATION_COOLDOWN'],
            (error) => {
              const data = error.data as Record<string, unknown>;
              if (
                data.code === 'ERR_AUTHORIZATION_COOLDOWN' &&
                !(typeof data.retryAfterMs === 'number' && data.retryAfterMs > 0)
              ) {
                return `cool-down without a positive retryAfterMs: ${short(data)}`;
              }
              return undefined;
            },
          ),
        };
      }
      return { account, judge: expectResult(JSON.stringify({ account })) };
    }
    case 'fuzz.wait':
      return {
        judge: (response) => `fuzz.wait answered though nobody cancelled it: ${short(response)}`,
      };
    case 'fuzz.fail':
      return {
        judge: expectError(-32603, ['ERR_INTERNAL'], (error) =>
          JSON.stringify(error).includes(SECRET_DETAIL)
            ? 'the handler crash detail reached the client'
            : undefined,
        ),
      };
    case 'fuzz.app-error':
      return {
        judge: expectError(-32000, ['FUZZ_APP_ERROR'], (error) =>
          JSON.stringify((error.data as Record<string, unknown>).data) ===
          JSON.stringify({ hint: 'fuzz' })
            ? undefined
            : `app error data ${short(error.data)}`,
        ),
      };
    default:
      return { judge: expectError(-32601, ['ERR_METHOD_NOT_FOUND']) };
  }
}

/**
 * Predicts what the server does with `items`, sent in order on a new connection.
 *
 * Hello answers and the closing notice are mandatory unless a later item breaks the framing
 * (the server then drops the connection at once, possibly before writing them). App answers
 * are mandatory when the connection stays open; before a close they may be lost, but any that
 * arrives must be right. Nothing sent after the item that closes the connection is answered.
 */
const decodedItems = new WeakMap<WireItem, ReferenceOutcome>();

export function predict(items: readonly WireItem[], context: OracleContext): Prediction {
  const decoded = items.map((item) => {
    let outcome = decodedItems.get(item);
    if (outcome === undefined) {
      outcome = referenceDecode(itemBytes(item), LIMIT);
      decodedItems.set(item, outcome);
    }
    return outcome;
  });
  const frameBroken = decoded.map(
    (outcome) => outcome.error !== undefined || outcome.messages.length !== 1,
  );
  const brokenAfter = (index: number) => frameBroken.slice(index + 1).some(Boolean);
  const answers: ExpectedAnswer[] = [];
  let state: 'awaiting-hello' | 'ready' = 'awaiting-hello';
  const waiting: ExpectedAnswer[] = [];
  const appAnswers: ExpectedAnswer[] = [];
  const closeAt = (item: number, kind: 'protocol' | 'frame', code = 'ERR_PROTOCOL'): Prediction => {
    for (const answer of appAnswers) answer.mandatory = false;
    return {
      answers,
      close: { item, kind, code, noticeRequired: kind === 'protocol' && !brokenAfter(item) },
      endState: 'closed',
    };
  };
  for (const index of items.keys()) {
    if (frameBroken[index]) return closeAt(index, 'frame');
    const m = decoded[index]!.messages[0]!.value as Record<string, unknown>;
    const incoming = classify(m);
    if (incoming.kind === 'other') return closeAt(index, 'protocol');
    if (incoming.kind === 'notification') {
      if (state !== 'ready' || incoming.method !== CANCEL) continue;
      const target = (incoming.params as { id?: unknown } | undefined)?.id;
      if (typeof target !== 'string' && typeof target !== 'number') continue;
      for (const answer of appAnswers) {
        if (!sameId(answer.id, target)) continue;
        // Cancelled: it may be answered as usual if it finished first, or fail as aborted.
        const usual = answer.judge;
        answer.judge = either(usual, expectError(-32003, ['ERR_ABORTED']));
        answer.mandatory = false;
      }
      for (let at = waiting.length - 1; at >= 0; at--)
        if (sameId(waiting[at]!.id, target)) waiting.splice(at, 1);
      continue;
    }
    const { id, method, params } = incoming;
    if (state === 'awaiting-hello') {
      if (method !== HELLO) return closeAt(index, 'protocol');
      const verdict = checkHello(params);
      const mandatory = !brokenAfter(index);
      if (verdict === 'malformed') {
        answers.push({
          id,
          item: index,
          what: 'malformed hello',
          judge: expectError(-32602, ['ERR_PROTOCOL']),
          mandatory,
        });
        return closeAt(index, 'protocol');
      }
      if (verdict === 'unsupported') {
        answers.push({
          id,
          item: index,
          what: 'hello, no common version',
          judge: expectError(-32003, ['ERR_UNSUPPORTED_VERSION']),
          mandatory,
        });
        return closeAt(index, 'protocol', 'ERR_UNSUPPORTED_VERSION');
      }
      answers.push({ id, item: index, what: 'hello', judge: helloJudge(context), mandatory });
      state = 'ready';
      continue;
    }
    if (method === HELLO) return closeAt(index, 'protocol');
    if (waiting.some((answer) => sameId(answer.id, id))) return closeAt(index, 'protocol');
    const { judge, account } = appJudge(id, method, params);
    const answer: ExpectedAnswer = {
      id,
      item: index,
      what: method,
      judge,
      mandatory: method !== 'fuzz.wait',
    };
    if (account !== undefined) answer.account = account;
    answers.push(answer);
    appAnswers.push(answer);
    if (method === 'fuzz.wait') waiting.push(answer);
  }
  return { answers, endState: state };
}

// ---------------------------------------------------------------------------------------------
// Checking what the server sends

const CLOSING_REASONS = new Set([
  'shutdown',
  'protocol-error',
  'handshake-timeout',
  'connection-limit',
  'peer-rejected',
  'peer-unknown',
  'peer-changed',
]);

/** docs/protocol.md §3 and §6: problems with the shape of a message the server sent. */
export function shapeProblems(m: Received): string[] {
  const problems: string[] = [];
  if (m.jsonrpc !== '2.0') problems.push(`jsonrpc ${short(m.jsonrpc)}`);
  if (Object.hasOwn(m, 'method')) {
    if (Object.hasOwn(m, 'id')) problems.push(`the server sent a request: ${short(m)}`);
    if (typeof m.method !== 'string' || !m.method.startsWith('bridgekeeper.'))
      problems.push(`notification ${short(m.method)}`);
    return problems;
  }
  const hasResult = Object.hasOwn(m, 'result');
  const hasError = Object.hasOwn(m, 'error');
  if (hasResult === hasError)
    problems.push(`a response needs exactly one of result and error: ${short(m)}`);
  if (hasError) {
    if (m.id !== null && !isRequestId(m.id)) problems.push(`error id ${short(m.id)}`);
    const error = m.error as Record<string, unknown> | null;
    if (!isPlainObject(error)) problems.push(`error ${short(error)}`);
    else {
      if (!Number.isInteger(error.code)) problems.push(`error.code ${short(error.code)}`);
      if (typeof error.message !== 'string' || error.message.length === 0)
        problems.push(`error.message ${short(error.message)}`);
      if (
        !isPlainObject(error.data) ||
        typeof error.data.code !== 'string' ||
        error.data.code.length === 0
      ) {
        problems.push(`error.data.code missing or not a string: ${short(error.data)}`);
      }
    }
  } else if (!isRequestId(m.id)) problems.push(`result id ${short(m.id)}`);
  return problems;
}

/** A raw connection that collects and checks the server's frames (its own framing code, not src's). */
export class RawPeer {
  readonly socket: net.Socket;
  readonly messages: Received[] = [];
  readonly problems: string[] = [];
  closed = false;
  readonly #closed: Promise<void>;
  #buffer: Buffer = Buffer.alloc(0);
  #wake: (() => void) | undefined;

  constructor(path: string) {
    this.socket = net.connect(path);
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    this.#closed = new Promise((resolve) =>
      this.socket.once('close', () => {
        this.closed = true;
        this.#wake?.();
        resolve();
      }),
    );
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.socket.connecting) return resolve();
      this.socket.once('connect', resolve);
      this.socket.once('close', () => reject(new Error('closed before connecting')));
    });
  }

  #onData(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUInt32BE(0);
      if (length === 0 || length > LIMIT) {
        this.problems.push(`the server sent a frame declaring ${length} bytes`);
        this.socket.destroy();
        return;
      }
      if (this.#buffer.length < 4 + length) break;
      const payload = this.#buffer.subarray(4, 4 + length);
      this.#buffer = this.#buffer.subarray(4 + length);
      try {
        const value = JSON.parse(
          new TextDecoder('utf-8', { fatal: true }).decode(payload),
        ) as unknown;
        if (!isPlainObject(value)) throw new Error('not an object');
        this.messages.push(value);
      } catch (error) {
        this.problems.push(`the server sent an undecodable frame (${(error as Error).message})`);
      }
    }
    this.#wake?.();
  }

  /** Waits until `done()` holds or the socket closes; false after `ms`. */
  async until(done: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!done()) {
      if (this.closed) return done();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    return true;
  }

  async waitClosed(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.#closed.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
    clearTimeout(timer);
    return outcome;
  }
}

/** How long a case may take at each step before it counts as a hang. */
export const CASE_BOUNDS = { connectMs: 5_000, answersMs: 10_000, closeMs: 5_000 };

/**
 * Sends `items` on a fresh connection (in two writes cut at `cut`), then checks everything the
 * server sent against `prediction`. Returns the problems found (empty when all is well).
 */
export async function runCase(
  path: string,
  items: readonly WireItem[],
  prediction: Prediction,
  cut: number,
): Promise<string[]> {
  const peer = new RawPeer(path);
  const problems: string[] = [];
  try {
    await peer.connected();
    const bytes = concat(items.map(itemBytes));
    const at = cut % (bytes.length + 1);
    peer.socket.write(bytes.subarray(0, at));
    if (at < bytes.length) {
      await new Promise((resolve) => setImmediate(resolve));
      if (!peer.closed) peer.socket.write(bytes.subarray(at));
    }
    const matched = new Set<ExpectedAnswer>();
    const mandatory = prediction.answers.filter((answer) => answer.mandatory);
    const closing = () => peer.messages.filter((m) => m.method === 'bridgekeeper.closing');
    if (prediction.close) {
      if (!(await peer.waitClosed(CASE_BOUNDS.closeMs)))
        problems.push(
          `the server did not close the connection within ${CASE_BOUNDS.closeMs} ms (a hang)`,
        );
    } else {
      const allIn = () =>
        mandatory.every((answer) =>
          peer.messages.some((m) => !Object.hasOwn(m, 'method') && sameId(m.id, answer.id)),
        );
      if (!(await peer.until(allIn, CASE_BOUNDS.answersMs))) {
        problems.push(
          `not every request was answered within ${CASE_BOUNDS.answersMs} ms${peer.closed ? ' (the server closed the connection)' : ''}`,
        );
      }
      peer.socket.end();
      if (!(await peer.waitClosed(CASE_BOUNDS.closeMs)))
        problems.push('the server did not finish closing after the client ended');
    }
    problems.push(...peer.problems);
    // Match every response to an expected answer with its id, in order.
    for (const m of peer.messages) {
      problems.push(
        ...shapeProblems(m).map((problem) => `malformed message from the server: ${problem}`),
      );
      if (Object.hasOwn(m, 'method')) {
        problems.push(...noticeProblems(m, prediction));
        continue;
      }
      if (m.id === null) continue; // an error about an unidentifiable request: shape checked above
      const candidates = prediction.answers.filter(
        (answer) => !matched.has(answer) && sameId(answer.id, m.id),
      );
      if (candidates.length === 0) {
        problems.push(
          `an answer nobody asked for (or to something sent after the connection failed): ${short(m)}`,
        );
        continue;
      }
      const verdicts = candidates.map((answer) => answer.judge(m));
      const fit = verdicts.indexOf(undefined);
      if (fit === -1) {
        problems.push(
          `wrong answer to ${candidates[0]!.what} (item ${candidates[0]!.item}): ${verdicts[0]}`,
        );
        matched.add(candidates[0]!);
      } else matched.add(candidates[fit]!);
    }
    for (const answer of mandatory) {
      if (!matched.has(answer))
        problems.push(`no answer to ${answer.what} (item ${answer.item}, id ${short(answer.id)})`);
    }
    const notices = closing();
    if (prediction.close) {
      if (!peer.closed) problems.push('still open');
      if (prediction.close.noticeRequired && notices.length !== 1)
        problems.push(`expected one closing notice, got ${notices.length}`);
      for (const notice of notices) {
        const params = notice.params as Record<string, unknown>;
        if (params.reason !== 'protocol-error' || params.code !== prediction.close.code) {
          problems.push(
            `closing notice ${short(params)}, expected protocol-error/${prediction.close.code}`,
          );
        }
      }
      if (notices.length > 1) problems.push(`${notices.length} closing notices`);
    } else if (notices.length > 0) {
      problems.push(`a closing notice on a connection that should stay open: ${short(notices[0])}`);
    }
    const closingIndex = peer.messages.findIndex((m) => m.method === 'bridgekeeper.closing');
    if (closingIndex !== -1 && closingIndex !== peer.messages.length - 1)
      problems.push('messages after the closing notice');
  } catch (error) {
    problems.push(`the case threw: ${(error as Error).stack ?? String(error)}`);
  } finally {
    peer.socket.destroy();
  }
  return problems;
}

function noticeProblems(m: Received, prediction: Prediction): string[] {
  const params = m.params as Record<string, unknown>;
  if (!isPlainObject(params)) return [`notification without params: ${short(m)}`];
  switch (m.method) {
    case 'bridgekeeper.closing':
      return CLOSING_REASONS.has(params.reason as string) &&
        typeof params.code === 'string' &&
        typeof params.message === 'string'
        ? []
        : [`closing notice ${short(params)}`];
    case 'bridgekeeper.prompt':
    case 'bridgekeeper.queued': {
      const request = prediction.answers.find(
        (answer) => answer.account !== undefined && sameId(answer.id, params.requestId),
      );
      if (!request) return [`${m.method} about a request that needs no account: ${short(params)}`];
      if (m.method === 'bridgekeeper.queued') {
        return Number.isInteger(params.position) && (params.position as number) >= 1
          ? []
          : [`queued notice ${short(params)}`];
      }
      const account = params.account as Record<string, unknown>;
      return params.backend === 'scripted' &&
        isPlainObject(account) &&
        account.id === request.account &&
        account.displayName === ACCOUNTS.get(request.account!)
        ? []
        : [`prompt notice ${short(params)} for account ${request.account}`];
    }
    default:
      return [`unknown notification ${short(m)}`];
  }
}
