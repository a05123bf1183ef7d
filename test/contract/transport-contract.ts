/**
 * The suite every Bridgekeeper transport passes: Unix sockets, the in-memory pair, and later the
 * Windows named pipe and the XPC relay. Each test gets a fresh listener from `setup`.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import type {
  CloseInfo,
  Message,
  Transport,
  TransportListener,
} from '../../src/transport/transport.js';

/** What a transport implementation provides to the contract suite. */
export interface TransportContractFixture {
  listener: TransportListener;
  /** Opens a client connection to `listener`. */
  connect(options?: { signal?: AbortSignal }): Promise<Transport>;
  /** Releases what setup created (the listener is closed by then, or not). */
  cleanup(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the first `count` messages `transport` receives. */
function collect(transport: Transport, count: number): Promise<Message[]> {
  return new Promise((resolve, reject) => {
    const messages: Message[] = [];
    const subscription = transport.onMessage((message) => {
      messages.push(message);
      if (messages.length === count) {
        subscription.dispose();
        closeSubscription.dispose();
        resolve(messages);
      }
    });
    const closeSubscription = transport.onClose((info) => {
      reject(
        new Error(
          `closed after ${messages.length} of ${count} messages (${info.error?.message ?? 'no error'})`,
        ),
      );
    });
  });
}

/** Resolves with the CloseInfo of `transport`. */
function closed(transport: Transport): Promise<CloseInfo> {
  return new Promise((resolve) => {
    transport.onClose(resolve);
  });
}

/** Rejects if `promise` has not settled within `ms`, so a hang fails with a reason. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      throw new Error(`${what} did not happen within ${ms} ms`);
    }),
  ]);
}

/** Collects the server ends of incoming connections, in order. */
class Accepted {
  readonly transports: Transport[] = [];
  readonly #waiters: Array<(transport: Transport) => void> = [];

  constructor(listener: TransportListener) {
    listener.onConnection((transport) => {
      this.transports.push(transport);
      this.#waiters.shift()?.(transport);
    });
  }

  /** The next connection not yet taken. */
  next(): Promise<Transport> {
    const taken = this.#taken++;
    if (taken < this.transports.length) return Promise.resolve(this.transports[taken]!);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #taken = 0;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<BridgekeeperError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected a rejection with ${code}`).toBeInstanceOf(BridgekeeperError);
  expect((caught as BridgekeeperError).code).toBe(code);
  return caught as BridgekeeperError;
}

function expectThrowsCode(fn: () => unknown, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected a throw with ${code}`).toBeInstanceOf(BridgekeeperError);
  expect((caught as BridgekeeperError).code).toBe(code);
}

/**
 * Runs the transport contract against one implementation.
 *
 * @param setup - creates a listening fixture for one test.
 */
export function runTransportContract(
  name: string,
  setup: () => Promise<TransportContractFixture>,
  options: { skipBecause?: string | undefined } = {},
): void {
  const { skipBecause } = options;
  const title = `transport contract: ${name}${skipBecause ? ` (${skipBecause})` : ''}`;
  describe.skipIf(skipBecause !== undefined)(title, () => {
    let fixture: TransportContractFixture;
    let accepted: Accepted;
    const opened: Transport[] = [];

    const connect = async (options?: { signal?: AbortSignal }): Promise<Transport> => {
      const transport = await fixture.connect(options);
      opened.push(transport);
      return transport;
    };

    /** A connected pair: [client end, server end]. */
    const pair = async (): Promise<[Transport, Transport]> => {
      const client = await connect();
      const server = await within(accepted.next(), 5000, 'accepting the connection');
      return [client, server];
    };

    beforeEach(async () => {
      fixture = await setup();
      accepted = new Accepted(fixture.listener);
    });

    afterEach(async () => {
      for (const transport of [...opened, ...accepted.transports]) transport.destroy();
      opened.length = 0;
      await fixture.listener.close();
      await fixture.cleanup();
    });

    it('delivers 1,000 messages in order in both directions at once', async () => {
      const [client, server] = await pair();
      const atServer = collect(server, 1000);
      const atClient = collect(client, 1000);
      for (let seq = 0; seq < 1000; seq++) {
        client.send({ from: 'client', seq });
        server.send({ from: 'server', seq, nested: { list: [seq, `${seq}`] } });
      }
      const [serverGot, clientGot] = await within(
        Promise.all([atServer, atClient]),
        10_000,
        'delivery',
      );
      expect(serverGot.map((message) => message.seq)).toEqual([...Array(1000).keys()]);
      expect(serverGot.every((message) => message.from === 'client')).toBe(true);
      expect(clientGot.map((message) => message.seq)).toEqual([...Array(1000).keys()]);
      expect(clientGot[999]).toEqual({ from: 'server', seq: 999, nested: { list: [999, '999'] } });
    });

    it('carries a ~900 KiB message intact in both directions', async () => {
      const [client, server] = await pair();
      // Multi-byte characters and an astral one, so a frame boundary would split a character.
      const text = `${'abcdefghij'.repeat(92_000)}ü€🔑${'xyz'.repeat(100)}`;
      const atServer = collect(server, 1);
      client.send({ text });
      const [fromClient] = await within(atServer, 10_000, 'the large message reaching the server');
      expect(fromClient!.text).toBe(text);
      const atClient = collect(client, 1);
      server.send({ text, reply: true });
      const [fromServer] = await within(atClient, 10_000, 'the large message reaching the client');
      expect(fromServer!.text).toBe(text);
      expect(fromServer!.reply).toBe(true);
    });

    it('closes from the client side: sent messages arrive first, the server sees an orderly remote close', async () => {
      const [client, server] = await pair();
      const atServer = collect(server, 3);
      const serverClosed = closed(server);
      const clientClosed = closed(client);
      client.send({ n: 1 });
      client.send({ n: 2 });
      client.send({ n: 3 });
      await within(client.close(), 5000, 'client.close()');
      expect(client.closed).toBe(true);
      expect((await atServer).map((message) => message.n)).toEqual([1, 2, 3]);
      const serverInfo = await within(serverClosed, 5000, 'the server end closing');
      expect(serverInfo).toEqual({ local: false });
      expect(await clientClosed).toEqual({ local: true });
      expect(server.closed).toBe(true);
    });

    it('closes from the server side: the client sees an orderly remote close', async () => {
      const [client, server] = await pair();
      const atClient = collect(client, 1);
      const clientClosed = closed(client);
      server.send({ bye: true });
      await within(server.close(), 5000, 'server.close()');
      expect(await atClient).toEqual([{ bye: true }]);
      const info = await within(clientClosed, 5000, 'the client end closing');
      expect(info.local).toBe(false);
      expect(info.error).toBeUndefined();
      expect(client.closed).toBe(true);
    });

    it('destroy mid-stream closes both ends and delivers no partial message', async () => {
      const [client, server] = await pair();
      const received: Message[] = [];
      server.onMessage((message) => received.push(message));
      const serverClosed = closed(server);
      const clientClosed = closed(client);
      const payload = 'p'.repeat(16 * 1024);
      for (let seq = 0; seq < 200; seq++) client.send({ seq, payload });
      // Destroy once the stream is under way, with most of it still in flight.
      await within(
        (async () => {
          while (received.length === 0) await sleep(1);
        })(),
        5000,
        'the first message arriving',
      );
      const failure = new Error('gave up');
      client.destroy(failure);
      client.destroy(new Error('second destroy is ignored'));
      const clientInfo = await within(clientClosed, 5000, 'the client end closing');
      expect(clientInfo.local).toBe(true);
      expect(clientInfo.error).toBe(failure);
      const serverInfo = await within(serverClosed, 5000, 'the server end closing');
      expect(serverInfo.local).toBe(false);
      if (serverInfo.error !== undefined)
        expect(serverInfo.error).toBeInstanceOf(BridgekeeperError);
      // Whatever arrived is a prefix of what was sent, every message whole.
      received.forEach((message, index) => {
        expect(message).toEqual({ seq: index, payload });
      });
      expect(client.closed).toBe(true);
      expect(server.closed).toBe(true);
    });

    it('rejects connect with an already-aborted signal with ERR_ABORTED and opens nothing', async () => {
      const controller = new AbortController();
      controller.abort();
      await expectCode(fixture.connect({ signal: controller.signal }), 'ERR_ABORTED');
      await sleep(30);
      expect(accepted.transports).toHaveLength(0);
    });

    it('rejects connect with ERR_TIMEOUT for an already-timed-out signal', async () => {
      const signal = AbortSignal.timeout(0);
      await sleep(5);
      await expectCode(fixture.connect({ signal }), 'ERR_TIMEOUT');
    });

    it('aborting during connect rejects with ERR_ABORTED and leaves no live connection', async () => {
      const controller = new AbortController();
      const attempt = fixture.connect({ signal: controller.signal });
      controller.abort();
      await expectCode(attempt, 'ERR_ABORTED');
      // If the server saw the connection at all, it must go away.
      await sleep(50);
      for (const transport of accepted.transports) {
        transport.onMessage(() => {});
        await within(closed(transport), 5000, 'the aborted connection closing at the server');
      }
    });

    it('serves 200 concurrent connections, each exchanging a message', async () => {
      fixture.listener.onConnection((transport) => {
        transport.onMessage((message) => transport.send({ echo: message.id }));
      });
      const clients = await within(
        Promise.all(Array.from({ length: 200 }, () => connect())),
        10_000,
        '200 connections',
      );
      const replies = await within(
        Promise.all(
          clients.map(async (client, id) => {
            const reply = collect(client, 1);
            client.send({ id });
            return (await reply)[0];
          }),
        ),
        10_000,
        '200 replies',
      );
      expect(replies).toEqual(clients.map((_, id) => ({ echo: id })));
      await Promise.all(clients.map((client) => client.close()));
    });

    it('holds incoming messages until the first onMessage subscriber, in both directions', async () => {
      const [client, server] = await pair();
      for (let n = 0; n < 5; n++) client.send({ n });
      for (let n = 0; n < 5; n++) server.send({ m: n });
      await sleep(50);
      expect((await collect(server, 5)).map((message) => message.n)).toEqual([0, 1, 2, 3, 4]);
      expect((await collect(client, 5)).map((message) => message.m)).toEqual([0, 1, 2, 3, 4]);
    });

    it('holds connections until the first onConnection subscriber', async () => {
      const other = await setup();
      try {
        const client = await other.connect();
        opened.push(client);
        client.send({ early: true });
        await sleep(30);
        const serverEnd = await within(
          new Promise<Transport>((resolve) => other.listener.onConnection(resolve)),
          5000,
          'the held connection reaching the first subscriber',
        );
        accepted.transports.push(serverEnd);
        expect(await collect(serverEnd, 1)).toEqual([{ early: true }]);
      } finally {
        await other.listener.close();
        await other.cleanup();
      }
    });

    it('reports the close to an onClose subscriber that arrives after the close, asynchronously', async () => {
      const [client, server] = await pair();
      server.onMessage(() => {});
      await client.close();
      let info: CloseInfo | undefined;
      const late = new Promise<CloseInfo>((resolve) => {
        client.onClose((closeInfo) => {
          info = closeInfo;
          resolve(closeInfo);
        });
      });
      expect(info).toBeUndefined();
      expect(await late).toEqual({ local: true });
      // A disposed late subscription is not called.
      let called = false;
      client
        .onClose(() => {
          called = true;
        })
        .dispose();
      await sleep(10);
      expect(called).toBe(false);
    });

    it('calls each onClose subscriber once', async () => {
      const [client, server] = await pair();
      server.onMessage(() => {});
      let calls = 0;
      client.onClose(() => calls++);
      await client.close();
      await client.close();
      client.destroy(new Error('after close'));
      await sleep(20);
      expect(calls).toBe(1);
    });

    it('throws ERR_TRANSPORT_CLOSED from send after a local close, and after a remote close', async () => {
      const [client, server] = await pair();
      const serverClosed = closed(server);
      server.onMessage(() => {});
      const closing = client.close();
      expectThrowsCode(() => client.send({ late: true }), 'ERR_TRANSPORT_CLOSED');
      await closing;
      expectThrowsCode(() => client.send({ late: true }), 'ERR_TRANSPORT_CLOSED');
      await within(serverClosed, 5000, 'the server end closing');
      expectThrowsCode(() => server.send({ late: true }), 'ERR_TRANSPORT_CLOSED');
    });

    it('throws ERR_TRANSPORT_CLOSED from send after destroy', async () => {
      const [client] = await pair();
      client.destroy();
      expectThrowsCode(() => client.send({ late: true }), 'ERR_TRANSPORT_CLOSED');
      expect(await closed(client)).toEqual({ local: true });
    });

    it('closes through await using', async () => {
      let kept: Transport | undefined;
      let serverEnd: Transport | undefined;
      {
        await using client = await connect();
        kept = client;
        serverEnd = await within(accepted.next(), 5000, 'accepting the connection');
        serverEnd.onMessage(() => {});
        client.send({ scoped: true });
      }
      expect(kept.closed).toBe(true);
      expect(await within(closed(serverEnd), 5000, 'the server end closing')).toEqual({
        local: false,
      });
    });

    it('refuses connections with ERR_APP_UNAVAILABLE once the listener is closed, leaving open ones working', async () => {
      const [client, server] = await pair();
      await fixture.listener.close();
      await fixture.listener.close();
      await expectCode(fixture.connect(), 'ERR_APP_UNAVAILABLE');
      const reply = collect(client, 1);
      server.onMessage((message) => server.send({ echo: message.n }));
      client.send({ n: 7 });
      expect(await within(reply, 5000, 'a reply on a connection opened before the close')).toEqual([
        { echo: 7 },
      ]);
    });

    it('rejects messages that are not JSON objects on the wire', async () => {
      const [client] = await pair();
      expectThrowsCode(
        () => client.send({ big: 1n } as unknown as Message),
        'ERR_INVALID_ARGUMENT',
      );
      const cyclic: Message = {};
      cyclic.self = cyclic;
      expectThrowsCode(() => client.send(cyclic), 'ERR_INVALID_ARGUMENT');
      expectThrowsCode(
        () => client.send({ toJSON: () => [1, 2] } as unknown as Message),
        'ERR_INVALID_ARGUMENT',
      );
      expect(client.closed).toBe(false);
    });

    it('delivers values as JSON would: dates as strings, undefined dropped, no shared references', async () => {
      const [client, server] = await pair();
      const received = collect(server, 1);
      const shared = { list: [1, 2] };
      client.send({ when: new Date(0), gone: undefined, shared });
      shared.list.push(3);
      const [message] = await received;
      expect(message).toEqual({ when: '1970-01-01T00:00:00.000Z', shared: { list: [1, 2] } });
      expect('gone' in message!).toBe(false);
    });
  });
}
