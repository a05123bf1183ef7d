/**
 * The libxpc half of the XPC transport (src/platform/darwin/xpc.ts) over a fake raw libxpc that
 * counts references and throws where a Mac would crash: event objects valid only during the
 * handler call, connections from a listener retained before the call returns and released once
 * after their last event (on the next turn), message dictionaries released after sending, the
 * handler block disposed after `XPC_ERROR_CONNECTION_INVALID` and never called after. Never run
 * on a Mac: see docs/macos.md.
 */

import { describe, expect, it } from 'vitest';
import { DARWIN_DECLARATIONS } from '../../../src/platform/darwin/bindings.js';
import {
  createXpcBindings,
  XPC_BARRIER_SIGNATURE,
  XPC_CONNECTION_MACH_SERVICE_LISTENER,
  XPC_HANDLER_SIGNATURE,
  type XpcNative,
} from '../../../src/platform/darwin/xpc.js';
import { XPC_KEYS, type XpcEvent } from '../../../src/transport/xpc.js';
import { FakeBlocks } from './fake-objc.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

interface FakeObject {
  type: bigint;
  refs: number;
  freed: boolean;
  /** Dictionary contents. */
  values?: Map<string, Buffer | boolean>;
  handlerBlock?: bigint;
}

/** A raw libxpc that tracks objects and reference counts. */
class FakeLibxpc implements XpcNative {
  readonly types = { dictionary: 0x7001n, error: 0x7002n, connection: 0x7003n };
  readonly errors: XpcNative['errors'];
  readonly objects = new Map<bigint, FakeObject>();
  readonly blocks = new FakeBlocks();
  readonly calls: string[] = [];
  readonly sentMessages: Array<Map<string, Buffer | boolean>> = [];
  requirementStatus = 0;
  #next = 0x10_000n;
  readonly stringType = 0x7004n;

  constructor(options: { since12?: boolean } = {}) {
    const since12 = options.since12 ?? true;
    this.errors = {
      interrupted: 0x7101n,
      invalid: 0x7102n,
      terminationImminent: 0x7103n,
      ...(since12 ? { peerRequirement: 0x7104n } : {}),
    };
    for (const error of Object.values(this.errors)) {
      this.objects.set(error, {
        type: this.types.error,
        refs: Number.POSITIVE_INFINITY,
        freed: false,
      });
    }
    // Shadows the method: the function is missing before macOS 12.
    if (!since12) {
      (this as Partial<XpcNative>).xpc_connection_set_peer_code_signing_requirement = undefined;
    }
  }

  make(type: bigint, extra: Partial<FakeObject> = {}): bigint {
    const id = this.#next++;
    this.objects.set(id, { type, refs: 1, freed: false, ...extra });
    return id;
  }

  live(id: bigint, what: string): FakeObject {
    const object = this.objects.get(id);
    if (!object || object.freed)
      throw new Error(`crash: ${what} on a freed or unknown object ${id}`);
    return object;
  }

  /** Delivers an event object to a connection's handler, as libxpc would; temporary objects are freed afterwards. */
  deliver(connection: bigint, object: bigint, temporary = false): void {
    const block = this.live(connection, 'deliver').handlerBlock;
    if (block === undefined) throw new Error('no handler');
    try {
      this.blocks.call(block, object);
    } finally {
      if (temporary) this.xpc_release(object);
    }
  }

  /** A message dictionary, as a peer's message arrives. */
  message(values: Record<string, Buffer | boolean>): bigint {
    return this.make(this.types.dictionary, { values: new Map(Object.entries(values)) });
  }

  // --- XpcNative ---
  xpc_connection_create_mach_service(name: string, _queue: null, flags: number): bigint | null {
    this.calls.push(`create ${name} ${flags}`);
    return name === 'null.service' ? null : this.make(this.types.connection);
  }
  xpc_connection_set_event_handler(connection: bigint, block: bigint): void {
    this.live(connection, 'set_event_handler').handlerBlock = block;
  }
  xpc_connection_set_peer_code_signing_requirement?(
    connection: bigint,
    requirement: string,
  ): number {
    this.live(connection, 'set_peer_code_signing_requirement');
    this.calls.push(`requirement ${requirement}`);
    return this.requirementStatus;
  }
  xpc_connection_resume(connection: bigint): void {
    this.live(connection, 'resume');
    this.calls.push('resume');
  }
  xpc_connection_cancel(connection: bigint): void {
    this.live(connection, 'cancel');
    this.calls.push('cancel');
  }
  readonly barriers: bigint[] = [];
  xpc_connection_send_barrier(connection: bigint, block: bigint): void {
    this.live(connection, 'send_barrier');
    this.barriers.push(block);
  }
  xpc_connection_send_message(connection: bigint, message: bigint): void {
    this.live(connection, 'send');
    const dictionary = this.live(message, 'send message');
    this.sentMessages.push(new Map(dictionary.values));
  }
  xpc_connection_get_pid(connection: bigint): number {
    this.live(connection, 'get_pid');
    return 501;
  }
  xpc_connection_get_euid(connection: bigint): number {
    this.live(connection, 'get_euid');
    return 502;
  }
  xpc_dictionary_create(): bigint | null {
    return this.make(this.types.dictionary, { values: new Map() });
  }
  xpc_dictionary_set_data(dictionary: bigint, key: string, bytes: Buffer, length: number): void {
    this.live(dictionary, 'set_data').values!.set(key, Buffer.from(bytes.subarray(0, length)));
  }
  xpc_dictionary_set_bool(dictionary: bigint, key: string, value: boolean): void {
    this.live(dictionary, 'set_bool').values!.set(key, value);
  }
  #dataPointers = new Map<bigint, { owner: bigint; bytes: Buffer }>();
  xpc_dictionary_get_data(dictionary: bigint, key: string, length: Buffer): bigint | null {
    const value = this.live(dictionary, 'get_data').values?.get(key);
    if (!Buffer.isBuffer(value)) return null;
    length.writeBigUInt64LE(BigInt(value.length), 0);
    const pointer = this.#next++;
    this.#dataPointers.set(pointer, { owner: dictionary, bytes: value });
    return pointer;
  }
  xpc_dictionary_get_value(dictionary: bigint, key: string): bigint | null {
    return this.live(dictionary, 'get_value').values?.has(key) ? 0xbeefn : null;
  }
  xpc_get_type(object: bigint): bigint | null {
    return this.live(object, 'get_type').type;
  }
  xpc_retain(object: bigint): bigint | null {
    this.live(object, 'retain').refs++;
    return object;
  }
  xpc_release(object: bigint): void {
    const record = this.live(object, 'release');
    record.refs--;
    if (record.refs === 0) record.freed = true;
  }
  copyBytes(pointer: bigint, length: number): Buffer {
    const data = this.#dataPointers.get(pointer);
    if (!data) throw new Error('crash: not a data pointer');
    this.live(data.owner, 'read data of');
    return Buffer.from(data.bytes.subarray(0, length));
  }
}

function setup(options?: { since12?: boolean }) {
  const native = new FakeLibxpc(options);
  const xpc = createXpcBindings(native, native.blocks);
  return { native, xpc };
}

describe('createXpcBindings', () => {
  it('creates client and listener connections with the right flags; NULL is ERR_PLATFORM', () => {
    const { native, xpc } = setup();
    xpc.createMachService('com.example.relay', { listener: false });
    xpc.createMachService('com.example.relay', { listener: true });
    expect(native.calls).toEqual([
      'create com.example.relay 0',
      `create com.example.relay ${XPC_CONNECTION_MACH_SERVICE_LISTENER}`,
    ]);
    expect(() => xpc.createMachService('null.service', { listener: false })).toThrow(
      expect.objectContaining({ code: 'ERR_PLATFORM' }),
    );
    expect(() => xpc.createMachService('a\0b', { listener: false })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('sends each kind as a dictionary with its key and releases the dictionary', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    xpc.send(connection, 'probe');
    xpc.send(connection, 'frame', Buffer.from('{"a":1}'));
    xpc.send(connection, 'probe-ack');
    expect(native.sentMessages).toEqual([
      new Map([[XPC_KEYS.probe, true]]),
      new Map([[XPC_KEYS.frame, Buffer.from('{"a":1}')]]),
      new Map([[XPC_KEYS['probe-ack'], true]]),
    ]);
    const dictionaries = [...native.objects.values()].filter(
      (o) => o.type === native.types.dictionary,
    );
    expect(dictionaries).toHaveLength(3);
    expect(dictionaries.every((o) => o.freed)).toBe(true);
  });

  it('decodes events, copying a frame out of the message before the message goes', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    const events: XpcEvent[] = [];
    xpc.setEventHandler(connection, (event) => events.push(event));
    const block = native.blocks.blocks.get(native.live(connection, 'test').handlerBlock!)!;
    expect(block.signature).toBe(XPC_HANDLER_SIGNATURE);

    native.deliver(connection, native.message({ [XPC_KEYS.frame]: Buffer.from('hello') }), true);
    native.deliver(connection, native.message({ [XPC_KEYS.probe]: true }), true);
    native.deliver(connection, native.message({ [XPC_KEYS['probe-ack']]: true }), true);
    native.deliver(connection, native.message({ other: true }), true);
    native.deliver(connection, native.make(native.stringType), true);
    native.deliver(connection, native.errors.interrupted);
    native.deliver(connection, native.errors.terminationImminent);
    native.deliver(connection, native.errors.peerRequirement!);
    native.deliver(connection, native.make(native.types.error), true);
    expect(events).toEqual([
      { type: 'message', kind: 'frame', payload: Buffer.from('hello') },
      { type: 'message', kind: 'probe' },
      { type: 'message', kind: 'probe-ack' },
      { type: 'message', kind: 'unknown' },
      { type: 'message', kind: 'unknown' },
      { type: 'error', error: 'interrupted' },
      { type: 'error', error: 'termination-imminent' },
      { type: 'error', error: 'peer-requirement' },
      { type: 'error', error: 'other' },
    ]);
  });

  it('reports a frame over maxFrameBytes by its length, without copying it', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    const events: XpcEvent[] = [];
    xpc.setEventHandler(connection, (event) => events.push(event), { maxFrameBytes: 4 });
    let copies = 0;
    const copy = native.copyBytes.bind(native);
    native.copyBytes = (pointer, length) => {
      copies++;
      return copy(pointer, length);
    };
    native.deliver(connection, native.message({ [XPC_KEYS.frame]: Buffer.from('12345') }), true);
    native.deliver(connection, native.message({ [XPC_KEYS.frame]: Buffer.from('1234') }), true);
    expect(events).toEqual([
      { type: 'message', kind: 'frame', oversize: 5 },
      { type: 'message', kind: 'frame', payload: Buffer.from('1234') },
    ]);
    expect(copies).toBe(1);
  });

  it('can install a handler again after making its block failed (no callback slot left)', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    const make = native.blocks.makeBlock.bind(native.blocks);
    native.blocks.makeBlock = () => {
      throw new Error('too many callbacks');
    };
    expect(() => xpc.setEventHandler(connection, () => {})).toThrow('too many callbacks');
    native.blocks.makeBlock = make;
    xpc.setEventHandler(connection, () => {});
    expect(native.live(connection, 'test').handlerBlock).toBeDefined();
  });

  it('retains a connection from a listener, and releases it once, a turn after its last event', async () => {
    const { native, xpc } = setup();
    const listener = xpc.createMachService('s', { listener: true });
    const accepted: bigint[] = [];
    xpc.setEventHandler(listener, (event) => {
      if (event.type === 'connection') accepted.push(event.connection);
    });
    const peer = native.make(native.types.connection);
    native.deliver(listener, peer, true); // libxpc drops its reference after the call
    expect(accepted).toEqual([peer]);
    expect(native.live(peer, 'test').refs).toBe(1);

    const events: XpcEvent[] = [];
    xpc.setEventHandler(peer, (event) => events.push(event));
    const block = native.live(peer, 'test').handlerBlock!;
    native.deliver(peer, native.errors.invalid);
    expect(events).toEqual([{ type: 'error', error: 'invalid' }]);
    expect(native.blocks.blocks.get(block)!.disposed).toBe(1);
    // Still alive during the turn in which libxpc is inside the handler.
    expect(native.objects.get(peer)!.freed).toBe(false);
    await tick();
    expect(native.objects.get(peer)!.freed).toBe(true);
  });

  it('disposes and releases after the last event even when the handler throws', async () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    xpc.setEventHandler(connection, () => {
      throw new Error('handler bug');
    });
    const block = native.live(connection, 'test').handlerBlock!;
    expect(() => native.deliver(connection, native.errors.invalid)).toThrow('handler bug');
    expect(native.blocks.blocks.get(block)!.disposed).toBe(1);
    await tick();
    expect(native.objects.get(connection)!.freed).toBe(true);
  });

  it('refuses a second handler on one connection', () => {
    const { xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    xpc.setEventHandler(connection, () => {});
    expect(() => xpc.setEventHandler(connection, () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('sets a code-signing requirement; EINVAL is ERR_INVALID_ARGUMENT; NUL is refused unsent', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    xpc.setPeerRequirement(connection, 'anchor apple generic');
    expect(native.calls).toContain('requirement anchor apple generic');
    native.requirementStatus = 22;
    expect(() => xpc.setPeerRequirement(connection, 'not a requirement')).toThrow(
      expect.objectContaining({
        code: 'ERR_INVALID_ARGUMENT',
        message: expect.stringContaining('EINVAL'),
      }),
    );
    native.requirementStatus = 45; // ENOTSUP: not "does not compile"
    expect(() => xpc.setPeerRequirement(connection, 'anchor apple')).toThrow(
      expect.objectContaining({
        code: 'ERR_PLATFORM',
        message: expect.stringContaining('error 45'),
      }),
    );
    expect(() => xpc.setPeerRequirement(connection, 'a\0b')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(native.calls.filter((call) => call.startsWith('requirement'))).toHaveLength(3);
  });

  it('before macOS 12: requirements are ERR_UNSUPPORTED_PLATFORM and an unknown error object is "other"', () => {
    const { native, xpc } = setup({ since12: false });
    const connection = xpc.createMachService('s', { listener: false });
    expect(() => xpc.setPeerRequirement(connection, 'anchor apple generic')).toThrow(
      expect.objectContaining({
        code: 'ERR_UNSUPPORTED_PLATFORM',
        message: expect.stringContaining('macOS 12'),
      }),
    );
    const events: XpcEvent[] = [];
    xpc.setEventHandler(connection, (event) => events.push(event));
    native.deliver(connection, native.make(native.types.error), true);
    expect(events).toEqual([{ type: 'error', error: 'other' }]);
  });

  it('runs a barrier once, through a block disposed after its one call', () => {
    const { native, xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    let done = 0;
    xpc.barrier(connection, () => done++);
    expect(done).toBe(0);
    const [block] = native.barriers;
    expect(native.blocks.blocks.get(block!)!.signature).toBe(XPC_BARRIER_SIGNATURE);
    native.blocks.call(block!);
    expect(done).toBe(1);
    expect(native.blocks.blocks.get(block!)!.disposed).toBe(1);
  });

  it('reads the peer pid and euid from the connection', () => {
    const { xpc } = setup();
    const connection = xpc.createMachService('s', { listener: false });
    expect([xpc.peerPid(connection), xpc.peerEuid(connection)]).toEqual([501, 502]);
  });

  it('declares exactly the libxpc functions XpcNative uses', () => {
    const native = new FakeLibxpc();
    const functions = Object.getOwnPropertyNames(FakeLibxpc.prototype).filter((name) =>
      name.startsWith('xpc_'),
    );
    expect(
      [
        ...Object.keys(DARWIN_DECLARATIONS.xpc.functions),
        ...Object.keys(DARWIN_DECLARATIONS.xpcSince12.functions),
      ].sort(),
    ).toEqual(functions.sort());
    for (const [key, definition] of Object.entries({
      ...DARWIN_DECLARATIONS.xpc.functions,
      ...DARWIN_DECLARATIONS.xpcSince12.functions,
    })) {
      expect(definition, key).toMatch(new RegExp(`[ *]${key}\\(`));
    }
    expect(native.errors.peerRequirement).toBeDefined();
  });
});
