/**
 * A tiny typed event emitter whose subscriptions return disposables. A listener that throws does
 * not stop the others; its error is reported through `onListenerError`.
 *
 * @module
 */

import { type Disposable, toDisposable } from '../transport/transport.js';

/** @internal */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<(payload: never) => void>>();
  readonly #onListenerError: (error: unknown) => void;

  constructor(onListenerError: (error: unknown) => void = () => {}) {
    this.#onListenerError = onListenerError;
  }

  on<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): Disposable {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    // Wrap so that subscribing the same function twice gives two independent subscriptions.
    const entry = (payload: never): void => listener(payload);
    set.add(entry);
    return toDisposable(() => {
      set.delete(entry);
    });
  }

  /** True when someone listens to `event`; lets hot paths skip building payloads. */
  has(event: keyof Events): boolean {
    const set = this.#listeners.get(event);
    return set !== undefined && set.size > 0;
  }

  emit<E extends keyof Events>(event: E, payload: Events[E]): void {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        (listener as (payload: Events[E]) => void)(payload);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
