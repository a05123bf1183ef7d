import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BridgekeeperError } from '../../src/errors.js';
import { encodeFrame } from '../../src/transport/framing.js';
import { createStreamTransport } from '../../src/transport/stream-transport.js';
import type { CloseInfo, Message, Transport } from '../../src/transport/transport.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function closed(transport: Transport): Promise<CloseInfo> {
  return new Promise((resolve) => transport.onClose(resolve));
}

describe('createStreamTransport', () => {
  let directory: string;
  let server: net.Server;
  const sockets: net.Socket[] = [];

  beforeEach(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'bk-stream-'));
  });

  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    server?.close();
    await rm(directory, { recursive: true, force: true });
  });

  /** A connected pair of raw sockets: [client, accepted], both paused. */
  async function socketPair(serverOptions: net.ServerOpts = {}): Promise<[net.Socket, net.Socket]> {
    const socketPath = path.join(directory, `s${sockets.length}.sock`);
    server = net.createServer({ pauseOnConnect: true, ...serverOptions });
    server.listen(socketPath);
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect(socketPath);
    client.pause();
    client.on('error', () => {});
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
});
