import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BridgekeeperError, TransportError } from '../../src/errors.js';
import { encodeFrame, FrameDecoder } from '../../src/transport/framing.js';
import {
  createStreamTransport,
  DEFAULT_HIGH_WATER_BYTES,
  DEFAULT_MAX_BUFFERED_BYTES,
  type StreamTransport,
} from '../../src/transport/stream-transport.js';
import type { Message } from '../../src/transport/transport.js';
import {
  closed,
  makeTempDirectory,
  PAD,
  rawSocket,
  removeDirectory,
  SMALL_LIMITS,
  settled,
  sleep,
} from './helpers.js';

/** Waits until `condition()` holds, failing with `what` after `ms`. */
async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(5);
  }
}

/** A 16 KiB reply (PAD), as in the review that found the unbounded buffering. */
const REPLY_BYTES = encodeFrame({ seq: 99_999, pad: PAD }).length;

describe('createStreamTransport', () => {
  let directory: string;
  let server: net.Server;
  const sockets: net.Socket[] = [];

  beforeEach(async () => {
    directory = await makeTempDirectory('bk-stream-');
  });

  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    server?.close();
    await removeDirectory(directory);
  });

  /** A connected pair of raw sockets: [client, accepted], both paused. */
  async function socketPair(serverOptions: net.ServerOpts = {}): Promise<[net.Socket, net.Socket]> {
    const socketPath = path.join(directory, `s${sockets.length}.sock`);
    server = net.createServer({ pauseOnConnect: true, ...serverOptions });
    server.listen(socketPath);
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = rawSocket(socketPath);
    client.pause();
    await once(client, 'connect');
    const [serverSocket] = await accepted;
    sockets.push(client, serverSocket);
    return [client, serverSocket];
  }

  it('keeps reading after the last subscriber leaves, holding messages for the next one in order', async () => {
    const [clientSocket, serverSocket] = await socketPair();
    const client = createStreamTransport(clientSocket);
    const transport = createStreamTransport(serverSocket);
    transport.onMessage(() => {}).dispose();
    // More than the 128 held before reading pauses, so the pause and resume are exercised.
    for (let seq = 0; seq < 300; seq++) client.send({ seq });
    await sleep(50);
    const got: Message[] = [];
    transport.onMessage((message) => got.push(message));
    while (got.length < 300) await sleep(5);
    expect(got.map((message) => message.seq)).toEqual([...Array(300).keys()]);
    const info = closed(transport);
    await client.close();
    expect(await info).toEqual({ local: false });
  });

  it('delivers the messages before a bad frame in the same chunk, then closes with ERR_PROTOCOL', async () => {
    const [clientSocket, serverSocket] = await socketPair();
    const transport = createStreamTransport(serverSocket);
    const got: Message[] = [];
    const info = closed(transport);
    transport.onMessage((message) => got.push(message));
    const bad = Buffer.from([0, 0, 0, 2, 0x5b, 0x5d]); // "[]"
    clientSocket.write(
      Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }), bad, encodeFrame({ n: 3 })]),
    );
    const result = await info;
    expect((result.error as BridgekeeperError).code).toBe('ERR_PROTOCOL');
    expect(result.local).toBe(false);
    expect(got).toEqual([{ n: 1 }, { n: 2 }]);
  });

  it('stops delivering when a subscriber destroys the transport in the middle of a chunk', async () => {
    const [clientSocket, serverSocket] = await socketPair();
    const transport = createStreamTransport(serverSocket);
    const got: Message[] = [];
    const info = closed(transport);
    const stop = new Error('enough');
    transport.onMessage((message) => {
      got.push(message);
      if (message.n === 2) transport.destroy(stop);
    });
    clientSocket.write(Buffer.concat([1, 2, 3, 4].map((n) => encodeFrame({ n }))));
    expect(await info).toEqual({ error: stop, local: true });
    expect(got).toEqual([{ n: 1 }, { n: 2 }]);
  });

  it('ends its side when the other side ends, even on a socket that allows half-open connections', async () => {
    const [clientSocket, serverSocket] = await socketPair({ allowHalfOpen: true });
    const transport = createStreamTransport(serverSocket);
    const info = closed(transport);
    transport.onMessage(() => {});
    clientSocket.end();
    clientSocket.resume();
    expect(await info).toEqual({ local: false });
    await once(clientSocket, 'close');
  });

  it('closes with an error at once when handed a socket that is already closed', async () => {
    const [clientSocket, serverSocket] = await socketPair();
    serverSocket.destroy();
    await once(serverSocket, 'close');
    const transport = createStreamTransport(serverSocket);
    expect(transport.closed).toBe(true);
    const info = await closed(transport);
    expect((info.error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
    clientSocket.destroy();
  });

  it('validates its options', async () => {
    const [, serverSocket] = await socketPair();
    for (const options of [
      { maxFrameBytes: 0 },
      { closeTimeoutMs: -1 },
      { closeTimeoutMs: Number.NaN },
    ]) {
      let code: string | undefined;
      try {
        createStreamTransport(serverSocket, options);
      } catch (error) {
        code = (error as BridgekeeperError).code;
      }
      expect(code).toBe('ERR_INVALID_ARGUMENT');
    }
  });

  it('sends frames written in one tick in order, as a single batch', async () => {
    const [clientSocket, serverSocket] = await socketPair();
    const client = createStreamTransport(clientSocket);
    const transport = createStreamTransport(serverSocket);
    const chunks: number[] = [];
    serverSocket.on('data', (chunk: Buffer) => chunks.push(chunk.length));
    const got: Message[] = [];
    transport.onMessage((message) => got.push(message));
    for (let seq = 0; seq < 50; seq++) client.send({ seq });
    while (got.length < 50) await sleep(2);
    expect(got.map((message) => message.seq)).toEqual([...Array(50).keys()]);
    // Corked until the end of the tick: far fewer reads than frames.
    expect(chunks.length).toBeLessThan(10);
  });

  describe('backpressure', () => {
    const REQUESTS = 1000;

    /** One write holding REQUESTS small request frames, seq 0 … REQUESTS − 1, from `from`. */
    const requests = (from = 0): Buffer =>
      Buffer.concat(Array.from({ length: REQUESTS }, (_, seq) => encodeFrame({ seq: from + seq })));

    /** Answers every message with a 16 KiB reply, recording the send buffer after each. */
    function serveReplies(transport: StreamTransport): { delivered: number; maxBuffered: number } {
      const stats = { delivered: 0, maxBuffered: 0 };
      transport.onMessage((message) => {
        stats.delivered++;
        transport.send({ seq: message.seq, pad: PAD });
        stats.maxBuffered = Math.max(stats.maxBuffered, transport.bufferedBytes);
      });
      return stats;
    }

    it('stops processing messages while more than highWaterBytes wait to be sent, and resumes once the reader drains them', async () => {
      const [clientSocket, serverSocket] = await socketPair();
      const transport = createStreamTransport(serverSocket, SMALL_LIMITS);
      const stats = serveReplies(transport);
      // The client pipelines a thousand requests (16 MB of replies) and reads nothing.
      clientSocket.write(requests());
      const delivered = await settled(() => stats.delivered);
      expect(delivered).toBeGreaterThan(0);
      expect(delivered).toBeLessThan(REQUESTS);
      expect(transport.bufferedBytes).toBeGreaterThan(SMALL_LIMITS.highWaterBytes);
      expect(stats.maxBuffered).toBeLessThanOrEqual(SMALL_LIMITS.highWaterBytes + REPLY_BYTES);
      expect(transport.closed).toBe(false);
      // More requests do not get through either.
      clientSocket.write(requests(REQUESTS));
      await sleep(100);
      expect(stats.delivered).toBe(delivered);

      // The client starts reading: everything gets answered, in order.
      const decoder = new FrameDecoder({ maxFrameBytes: SMALL_LIMITS.maxFrameBytes });
      const replies: unknown[] = [];
      clientSocket.on('data', (chunk: Buffer) =>
        decoder.decode(chunk, (message) => replies.push(message.seq)),
      );
      clientSocket.resume();
      await until(() => replies.length === 2 * REQUESTS, 'all the replies arriving', 15_000);
      expect(replies).toEqual([...Array(2 * REQUESTS).keys()]);
      expect(stats.delivered).toBe(2 * REQUESTS);
      expect(stats.maxBuffered).toBeLessThanOrEqual(SMALL_LIMITS.highWaterBytes + REPLY_BYTES);
      expect(transport.closed).toBe(false);
      const info = closed(transport);
      clientSocket.end();
      expect(await info).toEqual({ local: false });
    });

    it('destroys the transport with ERR_SEND_BUFFER_FULL once a send would buffer more than maxBufferedBytes', async () => {
      const [clientSocket, serverSocket] = await socketPair();
      const transport = createStreamTransport(serverSocket, SMALL_LIMITS);
      const info = closed(transport);
      const stats = serveReplies(transport);
      clientSocket.write(requests());
      const delivered = await settled(() => stats.delivered);
      expect(delivered).toBeLessThan(REQUESTS);
      expect(transport.closed).toBe(false);

      // Messages the server sends on its own (notifications) still pile up: up to the cap.
      let thrown: unknown;
      let waiting = 0;
      for (let attempt = 0; attempt < 100 && thrown === undefined; attempt++) {
        waiting = transport.bufferedBytes;
        expect(waiting).toBeLessThanOrEqual(SMALL_LIMITS.maxBufferedBytes);
        try {
          transport.send({ seq: -1, pad: PAD });
        } catch (error) {
          thrown = error;
        }
      }
      expect(thrown).toBeInstanceOf(TransportError);
      const error = thrown as BridgekeeperError;
      expect(error.code).toBe('ERR_SEND_BUFFER_FULL');
      expect(waiting + REPLY_BYTES).toBeGreaterThan(SMALL_LIMITS.maxBufferedBytes);
      expect(error.message).toContain('stopped reading');
      expect(error.message).toContain(`${waiting} bytes were waiting`);
      expect(error.message).toContain('connection was closed');
      expect(transport.closed).toBe(true);
      expect(await info).toEqual({ error, local: true });
      expect(() => transport.send({ more: 1 })).toThrow(
        expect.objectContaining({ code: 'ERR_TRANSPORT_CLOSED' }),
      );
      expect(stats.delivered).toBe(delivered);
      // The client sees the connection go.
      clientSocket.resume();
      if (!clientSocket.closed) await once(clientSocket, 'close');
    });

    it('does not start reading when the send buffer drains before the first subscriber', async () => {
      const [clientSocket, serverSocket] = await socketPair();
      const transport = createStreamTransport(serverSocket, SMALL_LIMITS);
      for (let n = 0; n < 20; n++) transport.send({ n, pad: PAD });
      expect(transport.bufferedBytes).toBeGreaterThan(0);
      // Garbage the transport would close on, if it read it.
      clientSocket.write(Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.from('nope!')]));
      let received = 0;
      clientSocket.on('data', (chunk: Buffer) => {
        received += chunk.length;
      });
      clientSocket.resume();
      await until(() => transport.bufferedBytes === 0, 'the send buffer draining');
      await sleep(50);
      expect(transport.closed).toBe(false);
      const info = closed(transport);
      transport.onMessage(() => {});
      expect(((await info).error as BridgekeeperError).code).toBe('ERR_PROTOCOL');
      expect(received).toBeGreaterThan(20 * 16 * 1024);
    });

    it('keeps reading a peer that reads its replies, however many it asks for', async () => {
      const [clientSocket, serverSocket] = await socketPair();
      const client = createStreamTransport(clientSocket, SMALL_LIMITS);
      const transport = createStreamTransport(serverSocket, SMALL_LIMITS);
      const stats = serveReplies(transport);
      const replies: unknown[] = [];
      client.onMessage((message) => replies.push(message.seq));
      for (let seq = 0; seq < REQUESTS; seq++) client.send({ seq });
      await until(() => replies.length === REQUESTS, 'all the replies arriving', 15_000);
      expect(replies).toEqual([...Array(REQUESTS).keys()]);
      expect(stats.maxBuffered).toBeLessThanOrEqual(SMALL_LIMITS.highWaterBytes + REPLY_BYTES);
      expect(transport.closed).toBe(false);
      await client.close();
    });

    it('validates highWaterBytes and maxBufferedBytes', async () => {
      const [, serverSocket] = await socketPair();
      for (const options of [
        { highWaterBytes: 0 },
        { highWaterBytes: -1 },
        { highWaterBytes: 1.5 },
        { highWaterBytes: Number.NaN },
        { maxBufferedBytes: Number.POSITIVE_INFINITY },
        { highWaterBytes: 2048, maxBufferedBytes: 2047, maxFrameBytes: 1024 },
        { highWaterBytes: 1024, maxBufferedBytes: 1027, maxFrameBytes: 1024 },
        // The default frame limit (1 MiB) does not fit in 64 KiB.
        { maxBufferedBytes: 64 * 1024 },
      ]) {
        let code: string | undefined;
        try {
          createStreamTransport(serverSocket, options);
        } catch (error) {
          code = (error as BridgekeeperError).code;
        }
        expect(code, JSON.stringify(options)).toBe('ERR_INVALID_ARGUMENT');
      }
      // The smallest allowed, and defaults that grow to fit a larger frame limit.
      expect(
        createStreamTransport(serverSocket, {
          highWaterBytes: 1024,
          maxBufferedBytes: 1028,
          maxFrameBytes: 1024,
        }).closed,
      ).toBe(false);
      expect(createStreamTransport(serverSocket, { maxFrameBytes: 32 * 1024 * 1024 }).closed).toBe(
        false,
      );
      expect(
        createStreamTransport(serverSocket, { highWaterBytes: 2 * DEFAULT_MAX_BUFFERED_BYTES })
          .closed,
      ).toBe(false);
      expect(DEFAULT_HIGH_WATER_BYTES).toBe(1024 * 1024);
      expect(DEFAULT_MAX_BUFFERED_BYTES).toBe(16 * 1024 * 1024);
    });
  });
});
