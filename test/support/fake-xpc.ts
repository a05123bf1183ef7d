/**
 * A fake libxpc + launchd for tests on any OS: {@link FakeXpc} implements `XpcBindings` for one
 * fake process (pid, euid, the code-signing requirements it satisfies), and every instance of a
 * {@link FakeXpcWorld} talks to every other through the world's mach services.
 *
 * What it models (from `<xpc/connection.h>` and Apple's documentation; none of it was checked
 * against a real Mac):
 * - launchd's registry: a listener on a name that is not registered, or already taken, gets
 *   `invalid`; a client of a name nobody listens on gets `invalid` after resume.
 * - connections are created suspended; events (and messages) wait until resume; they are
 *   delivered asynchronously (setImmediate), in order per connection; a message updates the
 *   receiver's "last sender" (`peerPid`/`peerEuid`, 0 before any).
 * - a receiving connection with a requirement set turns each message from a sender that does not
 *   satisfy it into a `peer-requirement` error, dropping the message.
 * - cancel: nothing more but `invalid`, which is always the last event, delivered once; the other
 *   end then sees the connection go (see {@link FakeXpcWorldOptions.remoteCancel}).
 * - a killed process: the server ends of the connections it opened see `interrupted` then
 *   `invalid`; the clients of the services it offered see `interrupted` (their connection stays
 *   usable for a relaunch, so they must cancel it).
 * - what was sent before a cancel is delivered first — unless
 *   {@link FakeXpcWorldOptions.cancelDiscardsUnsent}, which is what Apple documents.
 *
 * Misuse throws an Error naming it (and is recorded in {@link FakeXpcWorld.misuse}, so a caller
 * that swallows the throw is still caught): a handler set twice or after resume, resume twice or
 * without a handler, a requirement set after resume, any call on a connection after its
 * `invalid`, and — stricter than libxpc, for Bridgekeeper's own rules — a send
 * before resume, after cancel, or after `interrupted` (libxpc would relaunch the service and hand
 * the message to a new, unverified process). {@link FakeXpcWorld.assertNoLeaks} checks, once
 * everything is closed, that every connection of a living process got a handler, was resumed
 * exactly once, and ended with exactly one `invalid`.
 */

import { createError } from '../../src/errors.js';
import type {
  XpcBindings,
  XpcConnection,
  XpcEvent,
  XpcMessageKind,
} from '../../src/transport/xpc.js';

/** How the fake world behaves where Apple's documentation leaves room. */
export interface FakeXpcWorldOptions {
  /**
   * What a client connection gets when the server cancels its end: `invalid` (the default,
   * what the transport assumes) or `interrupted` (the connection stays usable for a relaunch).
   * Apple does not document which; see the module comment of src/transport/xpc.ts.
   */
  remoteCancel?: 'invalid' | 'interrupted';
  /**
   * Whether cancel discards messages sent in the same turn that libxpc has not sent yet, as
   * Apple's documentation of `xpc_connection_cancel` says. Default true.
   */
  cancelDiscardsUnsent?: boolean;
  /**
   * What libxpc does with a message from a peer that fails the connection's requirement:
   * `error` (deliver `XPC_ERROR_PEER_CODE_SIGNING_REQUIREMENT` instead; the default) or `drop`
   * (drop it silently). Apple documents the error for replies only; tests run both.
   */
  requirementFailure?: 'error' | 'drop';
  /** Whether a send barrier runs (`runs`, the default) or never does (`never`). */
  barrier?: 'runs' | 'never';
}

/** One fake process. */
export interface FakeProcessOptions {
  readonly pid: number;
  readonly euid: number;
  /** Code-signing requirements this process satisfies (exact strings). */
  readonly satisfies?: Iterable<string>;
  /** `unsupported`: macOS < 12, `setPeerRequirement` throws `ERR_UNSUPPORTED_PLATFORM`. */
  readonly peerRequirements?: 'supported' | 'unsupported';
}

type Role = 'listener' | 'client' | 'accepted';

interface Envelope {
  readonly event: XpcEvent;
  /** For messages: the process that sent it. */
  readonly sender?: FakeXpc;
}

/** A message on its way out, not yet handed to the receiver (libxpc's send queue). */
interface Outgoing {
  readonly kind: XpcMessageKind;
  readonly payload?: Buffer;
}

/** What the tests can see of a connection. */
export interface FakeConnectionInfo {
  readonly id: XpcConnection;
  readonly role: Role;
  readonly service: string;
  readonly owner: FakeXpc;
  readonly requirement: string | undefined;
  readonly resumes: number;
  readonly cancels: number;
  /** Barriers set (`xpc_connection_send_barrier`). */
  readonly barriers: number;
  readonly invalidDelivered: number;
  /** Event types (errors as `error:<name>`, messages as `message:<kind>`) in delivery order. */
  readonly delivered: readonly string[];
  /** Messages sent on this connection, per kind. */
  readonly sent: Readonly<Record<XpcMessageKind, number>>;
  readonly handlerSet: boolean;
}

class FakeConnectionState implements FakeConnectionInfo {
  readonly id: XpcConnection;
  readonly role: Role;
  readonly service: string;
  readonly owner: FakeXpc;
  handler: ((event: XpcEvent) => void) | undefined;
  requirement: string | undefined;
  resumes = 0;
  cancels = 0;
  barriers = 0;
  maxFrameBytes: number | undefined;
  invalidDelivered = 0;
  readonly delivered: string[] = [];
  readonly sent: Record<XpcMessageKind, number> = { frame: 0, probe: 0, 'probe-ack': 0 };
  peer: FakeConnectionState | undefined;
  inbox: Envelope[] = [];
  outbox: Outgoing[] = [];
  /** This side called cancel. */
  cancelled = false;
  /** `invalid` is queued (nothing may be queued after it). */
  ending = false;
  /** Got `interrupted` and was not cancelled yet: a send now would relaunch the service. */
  interrupted = false;
  lastSender: FakeXpc | undefined;
  /** Released by libxpc without ever reaching the owner (a 'connection' event never delivered). */
  released = false;
  dispatchScheduled = false;
  flushScheduled = false;

  constructor(id: XpcConnection, role: Role, service: string, owner: FakeXpc) {
    this.id = id;
    this.role = role;
    this.service = service;
    this.owner = owner;
  }

  get handlerSet(): boolean {
    return this.handler !== undefined;
  }

  get invalid(): boolean {
    return this.invalidDelivered > 0;
  }
}

const INVALID: XpcEvent = Object.freeze({ type: 'error', error: 'invalid' });
const INTERRUPTED: XpcEvent = Object.freeze({ type: 'error', error: 'interrupted' });

function describe(event: XpcEvent): string {
  if (event.type === 'message') return `message:${event.kind}`;
  if (event.type === 'error') return `error:${event.error}`;
  return 'connection';
}

/** launchd and the kernel, shared by every fake process of one test. */
export class FakeXpcWorld {
  readonly options: Required<FakeXpcWorldOptions>;
  /** Every misuse any process committed, even when the caller swallowed the throw. */
  readonly misuse: string[] = [];
  /** Exceptions that escaped an event handler into libxpc. */
  readonly handlerErrors: unknown[] = [];
  /** Every binding call, in order: `<pid> <call> <connection id>[ <detail>]`. */
  readonly calls: string[] = [];
  /** Requirements libxpc cannot compile (`setPeerRequirement` throws `ERR_INVALID_ARGUMENT`). */
  readonly uncompilable = new Set<string>();
  readonly #services = new Set<string>();
  readonly #listeners = new Map<string, FakeConnectionState>();
  readonly #connections = new Map<XpcConnection, FakeConnectionState>();
  #nextId = 0x7f00_0000_1000n;
  #scheduled = 0;

  constructor(options: FakeXpcWorldOptions = {}) {
    this.options = {
      remoteCancel: options.remoteCancel ?? 'invalid',
      cancelDiscardsUnsent: options.cancelDiscardsUnsent ?? true,
      requirementFailure: options.requirementFailure ?? 'error',
      barrier: options.barrier ?? 'runs',
    };
  }

  /** Lists `name` under some job's MachServices. */
  register(name: string): void {
    this.#services.add(name);
  }

  /** Removes `name` from launchd; a listener on it gets `invalid`. */
  unregister(name: string): void {
    this.#services.delete(name);
    const listener = this.#listeners.get(name);
    if (listener) {
      this.#listeners.delete(name);
      this.queueInvalid(listener, { dropPending: false });
    }
  }

  /** The connections so far, optionally of one process and role. */
  connections(filter: { owner?: FakeXpc; role?: Role } = {}): FakeConnectionInfo[] {
    return [...this.#connections.values()].filter(
      (state) =>
        (filter.owner === undefined || state.owner === filter.owner) &&
        (filter.role === undefined || state.role === filter.role),
    );
  }

  /** A connection by id. */
  connection(id: XpcConnection): FakeConnectionInfo {
    const state = this.#connections.get(id);
    if (!state) throw new Error(`no fake XPC connection ${id}`);
    return state;
  }

  /** Resolves once no event or message is waiting to be delivered. */
  /** @internal Runs `fn` on a later turn, counted until then for {@link idle}. */
  later(fn: () => void): void {
    this.#scheduled++;
    setImmediate(() => {
      this.#scheduled--;
      fn();
    });
  }

  async idle(): Promise<void> {
    for (let rounds = 0; rounds < 10_000; rounds++) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.#scheduled === 0) {
        // One more turn, for whatever the handlers scheduled through microtasks.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.#scheduled === 0) return;
      }
    }
    throw new Error('the fake XPC world never went idle');
  }

  /**
   * Throws unless every connection of a living process got a handler, was resumed exactly once
   * and got exactly one `invalid`, and nobody misused the API or let a handler throw. Call it once
   * everything is closed, after {@link FakeXpcWorld.idle}.
   */
  assertNoLeaks(): void {
    const problems = [...this.misuse.map((text) => `misuse: ${text}`)];
    for (const error of this.handlerErrors) {
      problems.push(`a handler threw: ${(error as Error)?.message ?? String(error)}`);
    }
    for (const state of this.#connections.values()) {
      if (!state.owner.alive || state.released) continue;
      const name = `${state.role} connection ${state.id} of pid ${state.owner.pid} (${state.service})`;
      if (!state.handler) problems.push(`${name} never got an event handler`);
      if (state.resumes !== 1) problems.push(`${name} was resumed ${state.resumes} times`);
      if (state.invalidDelivered !== 1) {
        problems.push(
          `${name} got 'invalid' ${state.invalidDelivered} times (delivered: ${state.delivered.join(', ') || 'nothing'})`,
        );
      }
    }
    if (problems.length > 0) throw new Error(`fake XPC: ${problems.join('\n')}`);
  }

  // ---- internals used by FakeXpc ----

  /** @internal */
  newConnection(role: Role, service: string, owner: FakeXpc): FakeConnectionState {
    const state = new FakeConnectionState(this.#nextId, role, service, owner);
    this.#nextId += 0x10n;
    this.#connections.set(state.id, state);
    return state;
  }

  /** @internal */
  lookup(id: XpcConnection, owner: FakeXpc, call: string): FakeConnectionState {
    const state = this.#connections.get(id);
    if (!state) return this.fail(`${call} on an unknown connection ${String(id)}`);
    if (state.owner !== owner) {
      return this.fail(`${call} on connection ${id}, which belongs to pid ${state.owner.pid}`);
    }
    if (state.invalid) return this.fail(`${call} on connection ${id} after its 'invalid'`);
    return state;
  }

  /** @internal Records and throws a misuse. */
  fail(text: string): never {
    this.misuse.push(text);
    throw new Error(`XPC API misuse: ${text}`);
  }

  /** @internal The connection became active. */
  activate(state: FakeConnectionState): void {
    if (state.role === 'listener') {
      if (!this.#services.has(state.service) || this.#listeners.has(state.service)) {
        this.queueInvalid(state, { dropPending: false });
      } else {
        this.#listeners.set(state.service, state);
      }
    } else if (state.role === 'client') {
      const listener = this.#listeners.get(state.service);
      if (!listener || listener.ending || !listener.owner.alive) {
        this.queueInvalid(state, { dropPending: false });
      } else {
        const accepted = this.newConnection('accepted', state.service, listener.owner);
        accepted.peer = state;
        state.peer = accepted;
        this.enqueue(listener, { event: { type: 'connection', connection: accepted.id } });
      }
    }
    this.scheduleDispatch(state);
  }

  /** @internal Queues `invalid` as the last event of `state`. */
  queueInvalid(state: FakeConnectionState, options: { dropPending: boolean }): void {
    if (state.ending || state.invalid) return;
    state.ending = true;
    if (options.dropPending) {
      for (const envelope of state.inbox) this.#discard(envelope, 'cancel');
      state.inbox = [];
    }
    state.inbox.push({ event: INVALID });
    if (state.role === 'listener' && this.#listeners.get(state.service) === state) {
      this.#listeners.delete(state.service);
    }
    this.scheduleDispatch(state);
  }

  /** A dropped 'connection' event: libxpc releases that peer; its client sees it go. */
  #discard(envelope: Envelope, how: 'cancel' | 'kill'): void {
    if (envelope.event.type !== 'connection') return;
    const accepted = this.#connections.get(envelope.event.connection);
    if (!accepted) return;
    accepted.released = true;
    const client = accepted.peer;
    accepted.peer = undefined;
    if (client && client.peer === accepted) {
      client.peer = undefined;
      this.peerGone(client, how);
    }
  }

  /** @internal `state`'s other end went away (cancelled, or its process died). */
  peerGone(state: FakeConnectionState, how: 'cancel' | 'kill'): void {
    if (state.ending || state.invalid || !state.owner.alive) return;
    if (state.role === 'accepted') {
      if (how === 'kill') this.enqueue(state, { event: INTERRUPTED });
      this.queueInvalid(state, { dropPending: false });
    } else if (how === 'kill' || this.options.remoteCancel === 'interrupted') {
      state.interrupted = true;
      state.peer = undefined;
      this.enqueue(state, { event: INTERRUPTED });
    } else {
      this.queueInvalid(state, { dropPending: false });
    }
  }

  /** @internal */
  enqueue(state: FakeConnectionState, envelope: Envelope): void {
    if (state.ending || state.invalid) {
      this.#discard(envelope, 'cancel');
      return;
    }
    state.inbox.push(envelope);
    this.scheduleDispatch(state);
  }

  /** @internal Moves what `state` sent to its peer's inbox. */
  flush(state: FakeConnectionState): void {
    const outbox = state.outbox;
    state.outbox = [];
    const peer = state.peer;
    if (!peer?.owner.alive) return;
    for (const outgoing of outbox) {
      const event: XpcEvent =
        outgoing.payload === undefined
          ? { type: 'message', kind: outgoing.kind }
          : { type: 'message', kind: outgoing.kind, payload: outgoing.payload };
      this.enqueue(peer, { event, sender: state.owner });
    }
  }

  /** @internal */
  scheduleFlush(state: FakeConnectionState): void {
    if (state.flushScheduled) return;
    state.flushScheduled = true;
    this.#scheduled++;
    setImmediate(() => {
      this.#scheduled--;
      state.flushScheduled = false;
      if (state.owner.alive) this.flush(state);
    });
  }

  /** @internal */
  scheduleDispatch(state: FakeConnectionState): void {
    if (state.dispatchScheduled || state.inbox.length === 0) return;
    state.dispatchScheduled = true;
    this.#scheduled++;
    setImmediate(() => {
      this.#scheduled--;
      state.dispatchScheduled = false;
      this.#dispatch(state);
    });
  }

  #dispatch(state: FakeConnectionState): void {
    // A suspended connection delivers nothing; a dead process runs no handler.
    while (state.inbox.length > 0 && state.resumes > 0 && !state.invalid && state.owner.alive) {
      const envelope = state.inbox.shift()!;
      let event = envelope.event;
      if (event.type === 'message' && envelope.sender !== undefined) {
        if (state.requirement !== undefined && !envelope.sender.satisfies.has(state.requirement)) {
          if (this.options.requirementFailure === 'drop') continue;
          event = { type: 'error', error: 'peer-requirement' };
        } else {
          state.lastSender = envelope.sender;
        }
      }
      // Like the binding: a frame over the handler's limit is reported by its length, uncopied.
      if (
        event.type === 'message' &&
        event.payload !== undefined &&
        state.maxFrameBytes !== undefined &&
        event.payload.length > state.maxFrameBytes
      ) {
        event = { type: 'message', kind: event.kind, oversize: event.payload.length };
      }
      if (event.type === 'error' && event.error === 'invalid') state.invalidDelivered++;
      state.delivered.push(describe(event));
      try {
        state.handler!(event);
      } catch (error) {
        this.handlerErrors.push(error);
      }
      if (state.invalid) {
        this.#afterInvalid(state);
        return;
      }
    }
  }

  #afterInvalid(state: FakeConnectionState): void {
    for (const envelope of state.inbox) this.#discard(envelope, 'cancel');
    state.inbox = [];
    state.outbox = [];
    // The other end learns of it, unless it is what ended this one.
    const peer = state.peer;
    state.peer = undefined;
    if (peer && peer.peer === state) {
      peer.peer = undefined;
      this.peerGone(peer, 'cancel');
    }
  }

  /** @internal A process died. */
  killed(process: FakeXpc): void {
    for (const state of this.#connections.values()) {
      if (state.owner !== process) continue;
      const inbox = state.inbox;
      state.inbox = [];
      for (const envelope of inbox) this.#discard(envelope, 'kill');
      state.outbox = [];
      if (state.role === 'listener' && this.#listeners.get(state.service) === state) {
        this.#listeners.delete(state.service);
      }
      const peer = state.peer;
      state.peer = undefined;
      if (peer && peer.peer === state) {
        peer.peer = undefined;
        this.peerGone(peer, 'kill');
      }
    }
  }
}

/**
 * One fake process's libxpc. Counts the messages it sent per kind ({@link FakeXpc.sent}), so a
 * test can assert that nothing but a probe went to an unverified server.
 */
export class FakeXpc implements XpcBindings {
  readonly world: FakeXpcWorld;
  readonly pid: number;
  readonly euid: number;
  readonly satisfies: ReadonlySet<string>;
  readonly peerRequirements: 'supported' | 'unsupported';
  /** Messages this process sent, per kind. */
  readonly sent: Record<XpcMessageKind, number> = { frame: 0, probe: 0, 'probe-ack': 0 };
  /** Set to make the next createMachService fail as libxpc returning NULL would. */
  failNextCreate = false;
  #alive = true;

  constructor(world: FakeXpcWorld, options: FakeProcessOptions) {
    this.world = world;
    this.pid = options.pid;
    this.euid = options.euid;
    this.satisfies = new Set(options.satisfies ?? []);
    this.peerRequirements = options.peerRequirements ?? 'supported';
  }

  get alive(): boolean {
    return this.#alive;
  }

  createMachService(name: string, options: { listener: boolean }): XpcConnection {
    if (!this.#alive) throw new Error(`createMachService by pid ${this.pid}, which was killed`);
    if (this.failNextCreate) {
      this.failNextCreate = false;
      throw createError('ERR_PLATFORM', 'xpc_connection_create_mach_service returned NULL.');
    }
    const state = this.world.newConnection(options.listener ? 'listener' : 'client', name, this);
    this.#log('create', state.id, options.listener ? 'listener' : 'client');
    return state.id;
  }

  setEventHandler(
    connection: XpcConnection,
    handler: (event: XpcEvent) => void,
    options: { readonly maxFrameBytes?: number } = {},
  ): void {
    if (!this.#alive) return; // a dead process runs nothing: stale objects of it do nothing
    const state = this.#state(connection, 'setEventHandler');
    this.#log('setEventHandler', connection);
    if (typeof handler !== 'function')
      this.world.fail(`setEventHandler(${connection}) without a function`);
    if (state.handler) this.world.fail(`setEventHandler twice on connection ${connection}`);
    if (state.resumes > 0)
      this.world.fail(`setEventHandler after resume on connection ${connection}`);
    state.handler = handler;
    state.maxFrameBytes = options.maxFrameBytes;
  }

  setPeerRequirement(connection: XpcConnection, requirement: string): void {
    if (!this.#alive) return; // a dead process runs nothing: stale objects of it do nothing
    const state = this.#state(connection, 'setPeerRequirement');
    this.#log('setPeerRequirement', connection, requirement);
    if (state.resumes > 0)
      this.world.fail(`setPeerRequirement after resume on connection ${connection}`);
    if (this.peerRequirements === 'unsupported') {
      throw createError(
        'ERR_UNSUPPORTED_PLATFORM',
        'xpc_connection_set_peer_code_signing_requirement is missing (macOS < 12).',
      );
    }
    if (this.world.uncompilable.has(requirement)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'xpc_connection_set_peer_code_signing_requirement: EINVAL.',
      );
    }
    state.requirement = requirement;
  }

  resume(connection: XpcConnection): void {
    if (!this.#alive) return; // a dead process runs nothing: stale objects of it do nothing
    const state = this.#state(connection, 'resume');
    this.#log('resume', connection);
    if (state.resumes > 0) this.world.fail(`resume twice on connection ${connection}`);
    if (!state.handler)
      this.world.fail(`resume without an event handler on connection ${connection}`);
    state.resumes++;
    if (state.cancelled) {
      // Cancelled while suspended: only 'invalid' is left to deliver.
      this.world.scheduleDispatch(state);
      return;
    }
    this.world.activate(state);
  }

  send(connection: XpcConnection, kind: XpcMessageKind, payload?: Buffer): void {
    if (!this.#alive) return; // a dead process runs nothing: stale objects of it do nothing
    const state = this.#state(connection, 'send');
    this.#log('send', connection, kind);
    if (state.role === 'listener') this.world.fail(`send on the listener connection ${connection}`);
    if (state.resumes === 0) this.world.fail(`send before resume on connection ${connection}`);
    if (state.cancelled) this.world.fail(`send after cancel on connection ${connection}`);
    if (state.interrupted) {
      this.world.fail(
        `send after 'interrupted' on connection ${connection}: libxpc would relaunch the service and hand it to an unverified process`,
      );
    }
    if (kind === 'frame' ? !Buffer.isBuffer(payload) : payload !== undefined) {
      this.world.fail(`send(${kind}) with a wrong payload on connection ${connection}`);
    }
    this.sent[kind]++;
    state.sent[kind]++;
    if (state.ending) return; // libxpc drops it: the connection is going
    state.outbox.push(payload === undefined ? { kind } : { kind, payload: Buffer.from(payload) });
    this.world.scheduleFlush(state);
  }

  cancel(connection: XpcConnection): void {
    if (!this.#alive) return; // a dead process runs nothing: stale objects of it do nothing
    const state = this.#state(connection, 'cancel');
    this.#log('cancel', connection);
    state.cancels++;
    if (state.cancelled) return; // idempotent in libxpc; tests read `cancels`
    state.cancelled = true;
    state.interrupted = false;
    if (this.world.options.cancelDiscardsUnsent) state.outbox = [];
    else this.world.flush(state);
    const alreadyEnding = state.ending;
    this.world.queueInvalid(state, { dropPending: true });
    if (!alreadyEnding && state.peer && state.peer.peer === state) {
      const peer = state.peer;
      state.peer = undefined;
      peer.peer = undefined;
      this.world.peerGone(peer, 'cancel');
    }
  }

  barrier(connection: XpcConnection, done: () => void): void {
    if (!this.#alive) return;
    const state = this.#state(connection, 'barrier');
    this.#log('barrier', connection);
    if (state.role === 'listener')
      this.world.fail(`barrier on the listener connection ${connection}`);
    if (state.resumes === 0) this.world.fail(`barrier before resume on connection ${connection}`);
    if (typeof done !== 'function') this.world.fail(`barrier without a function on ${connection}`);
    state.barriers++;
    // Everything sent before the barrier is sent first; then the barrier runs, cancelled or not.
    if (!state.cancelled && state.owner.alive) this.world.flush(state);
    if (this.world.options.barrier === 'never') return;
    this.world.later(() => {
      if (this.#alive) done();
    });
  }

  peerPid(connection: XpcConnection): number {
    if (!this.#alive) return 0;
    return this.#state(connection, 'peerPid').lastSender?.pid ?? 0;
  }

  peerEuid(connection: XpcConnection): number {
    if (!this.#alive) return 0;
    return this.#state(connection, 'peerEuid').lastSender?.euid ?? 0;
  }

  /**
   * The process dies: its handlers never run again and its calls do nothing (its transports in
   * the test never close: do not await them); its peers hear of it.
   */
  kill(): void {
    if (!this.#alive) return;
    this.#alive = false;
    this.world.killed(this);
  }

  /**
   * Delivers `event` to one of this process's connections as if libxpc had, after what is already
   * queued there (a message as sent by that connection's peer, if it has one).
   */
  inject(connection: XpcConnection, event: XpcEvent): void {
    const state = this.world.connection(connection) as FakeConnectionState;
    if (state.owner !== this) throw new Error(`connection ${connection} is not this process's`);
    const peer = state.peer?.owner;
    this.world.enqueue(
      state,
      event.type === 'message' && peer ? { event, sender: peer } : { event },
    );
  }

  #state(connection: XpcConnection, call: string): FakeConnectionState {
    return this.world.lookup(connection, this, call);
  }

  #log(call: string, connection: XpcConnection, detail?: string): void {
    this.world.calls.push(
      `${this.pid} ${call} ${connection}${detail === undefined ? '' : ` ${detail}`}`,
    );
  }
}
