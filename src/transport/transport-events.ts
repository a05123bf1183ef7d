/**
 * The subscriber bookkeeping the transports and listeners of this folder share: who is
 * subscribed, what waits for a subscriber, and how a close reaches everyone exactly once. Each
 * transport still decides when to read, when to deliver what waits, and when it is closed.
 *
 * @internal
 * @module
 */

import { type BridgekeeperError, createError } from '../errors.js';
import {
  type CloseInfo,
  type Disposable,
  type Message,
  type Transport,
  toDisposable,
} from './transport.js';

/**
 * Reports a subscriber's exception the way an EventEmitter listener's would surface: as an
 * uncaught exception, after the other subscribers ran.
 *
 * @internal
 */
/** What `send()` throws on a closed transport (`ERR_TRANSPORT_CLOSED`). */
export function closedForSending(): BridgekeeperError {
  return createError(
    'ERR_TRANSPORT_CLOSED',
    'Cannot send: the connection is closed. Open a new connection to send more messages.',
  );
}

export function reportListenerError(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}

/**
 * Where a transport is: `closing` from the moment it starts to close (either side) until
 * {@link TransportEvents.finish}, which alone makes it `closed`.
 *
 * @internal
 */
export type TransportState = 'open' | 'closing' | 'closed';

/**
 * The subscriber side of a {@link Transport}: its state, the incoming items held for a message
 * subscriber, the message and close subscribers, and the promise `close()` returns.
 *
 * It guarantees that:
 * - every `onMessage`/`onClose` call is a subscription of its own, even for a function that is
 *   already subscribed, and disposing it removes only that one;
 * - once closed, `onMessage` subscribes nothing, and `onClose` still calls its listener, once,
 *   in a microtask, with how the transport closed (unless disposed before that);
 * - {@link TransportEvents.emit} calls the message subscribers in the order they subscribed and
 *   stops as soon as the transport is no longer open;
 * - {@link TransportEvents.finish} takes effect once: it drops the queue and the message
 *   subscribers, calls each close subscriber once, synchronously and in order, and then resolves
 *   {@link TransportEvents.closed};
 * - an exception from a subscriber never stops the others: it is rethrown asynchronously
 *   ({@link reportListenerError}).
 *
 * @internal
 */
export class TransportEvents<Queued> {
  /** Set to `closing` by the transport; only {@link TransportEvents.finish} sets `closed`. */
  state: TransportState = 'open';
  /** Resolves once {@link TransportEvents.finish} ran; never rejects. */
  readonly closed: Promise<void>;
  readonly #messageListeners = new Set<(message: Message) => void>();
  readonly #closeListeners = new Set<(info: CloseInfo) => void>();
  #queue: Queued[] = [];
  #started = false;
  #info: CloseInfo | undefined;
  #resolveClosed!: () => void;

  constructor() {
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /**
   * Incoming items held for a message subscriber, oldest first. Dropping replaces the array, so
   * a delivery loop holding the old one can tell that it was dropped meanwhile.
   */
  get queue(): Queued[] {
    return this.#queue;
  }

  /** Whether a message subscriber was ever accepted: the transport reads from then on. */
  get started(): boolean {
    return this.#started;
  }

  get hasMessageListeners(): boolean {
    return this.#messageListeners.size > 0;
  }

  /**
   * Subscribes to messages unless closed; `subscribed` then runs before this returns, with
   * `first` true for the first subscription ever, for the transport to start reading or
   * deliver what is queued.
   */
  onMessage(
    listener: (message: Message) => void,
    subscribed: (first: boolean) => void,
  ): Disposable {
    if (this.state === 'closed') return toDisposable(() => {});
    // Wrapped so that one function subscribed twice is two subscriptions.
    const entry = (message: Message): void => listener(message);
    this.#messageListeners.add(entry);
    const first = !this.#started;
    this.#started = true;
    subscribed(first);
    return toDisposable(() => {
      this.#messageListeners.delete(entry);
    });
  }

  onClose(listener: (info: CloseInfo) => void): Disposable {
    const info = this.#info;
    if (info !== undefined) {
      let active = true;
      queueMicrotask(() => {
        if (!active) return;
        try {
          listener(info);
        } catch (error) {
          reportListenerError(error);
        }
      });
      return toDisposable(() => {
        active = false;
      });
    }
    // Wrapped so that one function subscribed twice is two subscriptions.
    const entry = (closeInfo: CloseInfo): void => listener(closeInfo);
    this.#closeListeners.add(entry);
    return toDisposable(() => {
      this.#closeListeners.delete(entry);
    });
  }

  /** Hands `message` to every message subscriber while the transport stays open. */
  /**
   * Delivers held items, oldest first, while a message subscriber is there, the transport is
   * open and `more()` allows; what is left stays held, in order, for the next subscriber. Safe
   * against the queue being dropped meanwhile. Returns how many were delivered.
   */
  deliverQueued(toMessage: (item: Queued) => Message, more: () => boolean = () => true): number {
    const queue = this.#queue;
    let index = 0;
    while (index < queue.length && this.hasMessageListeners && this.state === 'open' && more()) {
      this.emit(toMessage(queue[index++]!));
    }
    if (this.#queue === queue) queue.splice(0, index);
    return index;
  }

  emit(message: Message): void {
    for (const listener of this.#messageListeners) {
      try {
        listener(message);
      } catch (error) {
        reportListenerError(error);
      }
      if (this.state !== 'open') return;
    }
  }

  /** Drops everything queued (what a closing transport will never deliver). */
  dropQueue(): void {
    this.#queue = [];
  }

  /** Marks the transport closed and tells the close subscribers; later calls do nothing. */
  finish(info: CloseInfo): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.#info = info;
    this.#queue = [];
    this.#messageListeners.clear();
    const listeners = [...this.#closeListeners];
    this.#closeListeners.clear();
    for (const listener of listeners) {
      try {
        listener(info);
      } catch (error) {
        reportListenerError(error);
      }
    }
    this.#resolveClosed();
  }
}

/**
 * The subscriber side of a `TransportListener`: connections that arrive while nobody is
 * subscribed are held, in order, and handed over in a microtask once someone subscribes (never
 * inside `onConnection()` itself); while any are held, new ones queue behind them. Nothing held
 * is handed over once `accepting()` returns false. A subscriber's exception never stops the
 * others: it is rethrown asynchronously ({@link reportListenerError}).
 *
 * @internal
 */
export class ConnectionEvents {
  readonly #accepting: () => boolean;
  readonly #listeners = new Set<(transport: Transport) => void>();
  /** Connections that arrived while nobody was subscribed. */
  #pending: Transport[] = [];
  #flushScheduled = false;

  constructor(accepting: () => boolean) {
    this.#accepting = accepting;
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    const entry = (transport: Transport): void => listener(transport);
    this.#listeners.add(entry);
    if (this.#pending.length > 0) this.#scheduleFlush();
    return toDisposable(() => {
      this.#listeners.delete(entry);
    });
  }

  /** Hands a new connection to the subscribers, or holds it until there is one. */
  deliver(transport: Transport): void {
    if (this.#listeners.size === 0 || this.#pending.length > 0) this.#pending.push(transport);
    else this.#emit(transport);
  }

  /**
   * Passes each connection still held to `discard` (nobody else will own it), then drops every
   * subscriber.
   */
  close(discard: (transport: Transport) => void): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const transport of pending) discard(transport);
    this.#listeners.clear();
  }

  #emit(transport: Transport): void {
    for (const listener of this.#listeners) {
      try {
        listener(transport);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      while (this.#pending.length > 0 && this.#listeners.size > 0 && this.#accepting()) {
        this.#emit(this.#pending.shift()!);
      }
    });
  }
}
