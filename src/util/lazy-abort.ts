/**
 * An AbortController whose signal is created only when something asks for it.
 *
 * Every request the server runs can be cancelled (the client cancels or leaves, the server is
 * destroyed), but most finish without anyone listening for that: a handler that ignores its
 * signal, on a live grant, never needs one. Creating an `AbortController` and its signal costs
 * ~7 µs on Node 20, a tenth of a whole authorized round trip (bench/rtt), so it is made on demand.
 * A signal created after the abort is created already aborted, with the same reason.
 *
 * @internal
 */
export class LazyAbortController {
  #controller: AbortController | undefined;
  #aborted = false;
  #reason: unknown;

  /** Whether {@link abort} was called. Reading it creates nothing. */
  get aborted(): boolean {
    return this.#aborted;
  }

  /** The signal, created on first use. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Aborts once; later calls are ignored, like `AbortController.abort`. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}
