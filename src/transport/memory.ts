/**
 * In-memory transports, for tests and for embedding a server and client in one process. They
 * behave like a socket where it matters: messages go through a JSON round trip, arrive
 * asynchronously and in order, and an end that never subscribed to messages (never read) does
 * not notice the other closing.
 *
 * @module
 */

import { abortError, createError, throwIfAborted } from '../errors.js';
import { serializeMessage } from './framing.js';
import type {
  CloseInfo,
  ConnectTransportOptions,
  Disposable,
  Message,
  PeerIdentity,
  Transport,
  TransportConnector,
  TransportListener,
} from './transport.js';
import { ConnectionEvents, closedForSending, TransportEvents } from './transport-events.js';

/**
 * The identity memory transports report when none is given: this very process, as the same
 * user, which a same-user policy admits.
 */
export const DEFAULT_MEMORY_PEER: PeerIdentity = Object.freeze({
  pid: process.pid,
  uid: process.getuid?.(),
  gid: process.getgid?.(),
  startTime: '0',
  source: 'memory',
});

/** Options for {@link createMemoryPair}. */
export interface MemoryPairOptions {
  /** What the server end reports as its peer; default {@link DEFAULT_MEMORY_PEER}. */
  clientPeer?: PeerIdentity | undefined;
  /** What the client end reports as its peer; default {@link DEFAULT_MEMORY_PEER}. */
  serverPeer?: PeerIdentity | undefined;
}

type InboxEntry =
  | { readonly message: Message }
  | { readonly close: true; readonly error: Error | undefined };

class MemoryTransport implements Transport {
  readonly peer: PeerIdentity | undefined;
  other!: MemoryTransport;
  /**
   * The queue is this end's inbox. It reads (drains it) from the first onMessage subscription
   * on, as a socket would.
   */
  readonly #events = new TransportEvents<InboxEntry>();
  #drainScheduled = false;

  constructor(peer: PeerIdentity | undefined) {
    this.peer = peer;
  }

  get closed(): boolean {
    return this.#events.state !== 'open';
  }

  send(message: Message): void {
    if (this.#events.state !== 'open') {
      throw closedForSending();
    }
    // The copy is what a socket would deliver: no shared references, toJSON applied, undefined
    // dropped, and the same refusal of BigInt or cycles.
    const copy = JSON.parse(serializeMessage(message)) as Message;
    this.other.receive({ message: copy });
  }

  onMessage(listener: (message: Message) => void): Disposable {
    return this.#events.onMessage(listener, () => this.#scheduleDrain());
  }

  onClose(listener: (info: CloseInfo) => void): Disposable {
    return this.#events.onClose(listener);
  }

  close(): Promise<void> {
    if (this.#events.state === 'open') {
      this.#events.state = 'closing';
      this.#events.dropQueue();
      this.other.receive({ close: true, error: undefined });
      setImmediate(() => this.#events.finish({ local: true }));
    }
    return this.#events.closed;
  }

  destroy(error?: Error): void {
    if (this.#events.state !== 'open') return;
    this.#events.state = 'closing';
    this.#events.dropQueue();
    // The other end learns that this one broke, not why: over a socket nothing would cross.
    this.other.receive({
      close: true,
      error:
        error === undefined
          ? undefined
          : createError(
              'ERR_APP_UNAVAILABLE',
              'The other end of the connection failed and closed it.',
            ),
    });
    setImmediate(() =>
      this.#events.finish(error === undefined ? { local: true } : { error, local: true }),
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Queues something the other end sent. */
  receive(entry: InboxEntry): void {
    if (this.#events.state !== 'open') return;
    this.#events.queue.push(entry);
    this.#scheduleDrain();
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled || !this.#events.started || this.#events.queue.length === 0) return;
    this.#drainScheduled = true;
    setImmediate(() => {
      this.#drainScheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    const inbox = this.#events.queue;
    let index = 0;
    while (index < inbox.length && this.#events.state === 'open') {
      const entry = inbox[index]!;
      if ('close' in entry) {
        this.#events.state = 'closing';
        this.#events.finish(
          entry.error === undefined ? { local: false } : { error: entry.error, local: false },
        );
        return;
      }
      if (!this.#events.hasMessageListeners) {
        // Nobody subscribed: messages wait for the next subscriber, but a close behind them
        // still gets through (and drops them), as on a socket that keeps reading.
        let closeAt = index + 1;
        while (closeAt < inbox.length && !('close' in inbox[closeAt]!)) closeAt++;
        if (closeAt === inbox.length) break;
        index = closeAt;
        continue;
      }
      index++;
      this.#events.emit(entry.message);
    }
    if (this.#events.queue === inbox) inbox.splice(0, index);
  }
}

/**
 * Creates two linked in-memory transports. `client.peer` is `serverPeer` and `server.peer` is
 * `clientPeer`, as each end sees the other.
 *
 * Messages are copied through a JSON round trip and delivered asynchronously, in order. Closing
 * one end closes the other (`local: false` there) once that end has read what came before the
 * close. `destroy(error)` on one end closes the other with an `ERR_APP_UNAVAILABLE` error
 * (`destroy()` without an error, like `close()`, with none). Unlike a socket, there is no frame
 * size limit.
 *
 * @throws from `send`: `ERR_TRANSPORT_CLOSED` once closed, `ERR_INVALID_ARGUMENT` for a message
 *   that is not serializable to a JSON object.
 * @example
 * ```ts
 * const [client, server] = createMemoryPair();
 * server.onMessage((message) => server.send({ echo: message }));
 * client.onMessage((message) => console.log(message));
 * client.send({ hello: 'world' });
 * ```
 */
export function createMemoryPair(
  options: MemoryPairOptions = {},
): [client: Transport, server: Transport] {
  const clientPeer = 'clientPeer' in options ? options.clientPeer : DEFAULT_MEMORY_PEER;
  const serverPeer = 'serverPeer' in options ? options.serverPeer : DEFAULT_MEMORY_PEER;
  const client = new MemoryTransport(serverPeer);
  const server = new MemoryTransport(clientPeer);
  client.other = server;
  server.other = client;
  return [client, server];
}

/** Options for {@link MemoryListener.connect}. */
export interface MemoryConnectOptions {
  /** The client's identity as the server sees it; default {@link DEFAULT_MEMORY_PEER}, `undefined` for none. */
  peer?: PeerIdentity | undefined;
  /** The server's identity as the client sees it; default {@link DEFAULT_MEMORY_PEER}, `undefined` for none. */
  serverPeer?: PeerIdentity | undefined;
  /** Cancels connecting. */
  signal?: AbortSignal;
}

/**
 * An in-memory {@link TransportListener}: `connect()` returns the client end of a new
 * {@link createMemoryPair} and hands the server end to `onConnection` subscribers (held until
 * the first one subscribes).
 *
 * @example
 * ```ts
 * const listener = new MemoryListener();
 * await server.listen({ listener });
 * const client = await connect({ app: 'my-agent', transport: await listener.connect() });
 * ```
 */
export class MemoryListener implements TransportListener {
  readonly address: string;
  readonly #connections = new ConnectionEvents(() => !this.#closed);
  #closed = false;

  constructor(address = 'memory') {
    this.address = address;
  }

  /** True once {@link MemoryListener.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    return this.#connections.onConnection(listener);
  }

  /**
   * Opens a connection and returns its client end, asynchronously as a socket would.
   *
   * @throws `ERR_APP_UNAVAILABLE` once the listener is closed; `ERR_ABORTED`/`ERR_TIMEOUT` on
   *   `signal`.
   */
  async connect(options: MemoryConnectOptions = {}): Promise<Transport> {
    const what = `Connecting to ${this.address}`;
    throwIfAborted(options.signal, what);
    this.#checkOpen();
    await new Promise<void>((resolve, reject) => {
      const signal = options.signal;
      const onAbort = (): void => {
        clearImmediate(immediate);
        reject(abortError(signal!, what));
      };
      const immediate = setImmediate(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    this.#checkOpen();
    // As in createMemoryPair: a missing peer is the default identity, an explicit undefined none.
    const [client, server] = createMemoryPair({
      clientPeer: 'peer' in options ? options.peer : DEFAULT_MEMORY_PEER,
      serverPeer: 'serverPeer' in options ? options.serverPeer : DEFAULT_MEMORY_PEER,
    });
    this.#connections.deliver(server);
    return client;
  }

  /**
   * A {@link TransportConnector} that reaches this listener at its address.
   *
   * @example
   * ```ts
   * const connector = listener.connector({ peer: { pid: 4242, uid: 1000, startTime: '1', source: 'test' } });
   * const transport = await connector.connect(listener.address);
   * ```
   */
  connector(defaults: Omit<MemoryConnectOptions, 'signal'> = {}): TransportConnector {
    return {
      connect: (address: string, options: ConnectTransportOptions = {}): Promise<Transport> => {
        if (address !== this.address) {
          return Promise.reject(
            createError(
              'ERR_APP_UNAVAILABLE',
              `Nothing is listening at ${address}. Start the app, then try again.`,
            ),
          );
        }
        return this.connect(options.signal ? { ...defaults, signal: options.signal } : defaults);
      },
    };
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#connections.close((transport) => transport.destroy());
    }
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw createError(
        'ERR_APP_UNAVAILABLE',
        `Nothing is listening at ${this.address}. Start the app, then try again.`,
      );
    }
  }
}
