import { describe, expect, it } from 'vitest';
import type { BridgekeeperError } from '../../src/errors.js';
import {
  createMemoryPair,
  DEFAULT_MEMORY_PEER,
  MemoryListener,
} from '../../src/transport/memory.js';
import type { CloseInfo, Message, PeerIdentity, Transport } from '../../src/transport/transport.js';
import { rejectionOf } from '../support/assertions.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function closed(transport: Transport): Promise<CloseInfo> {
  return new Promise((resolve) => transport.onClose(resolve));
}

const clientPeer: PeerIdentity = { pid: 11, uid: 1000, startTime: '1', source: 'test' };
const serverPeer: PeerIdentity = { pid: 22, uid: 1000, startTime: '2', source: 'test' };

describe('createMemoryPair', () => {
  it('gives each end the other end as its peer', () => {
    const [client, server] = createMemoryPair({ clientPeer, serverPeer });
    expect(client.peer).toBe(serverPeer);
    expect(server.peer).toBe(clientPeer);
  });

  it('defaults both peers to this process as the same user, and allows an explicit undefined', () => {
    const [client, server] = createMemoryPair();
    expect(client.peer).toBe(DEFAULT_MEMORY_PEER);
    expect(server.peer).toEqual({
      pid: process.pid,
      uid: process.getuid?.(),
      gid: process.getgid?.(),
      startTime: '0',
      source: 'memory',
    });
    const [bare] = createMemoryPair({ serverPeer: undefined });
    expect(bare.peer).toBeUndefined();
  });

  it('delivers asynchronously, never inside send()', async () => {
    const [client, server] = createMemoryPair();
    const got: Message[] = [];
    server.onMessage((message) => got.push(message));
    client.send({ n: 1 });
    expect(got).toEqual([]);
    await sleep(5);
    expect(got).toEqual([{ n: 1 }]);
  });

  it('destroy(error) closes the other end with ERR_APP_UNAVAILABLE after what was already sent', async () => {
    const [client, server] = createMemoryPair();
    const got: Message[] = [];
    server.onMessage((message) => got.push(message));
    const serverClosed = closed(server);
    client.send({ last: true });
    const failure = new Error('crashed');
    client.destroy(failure);
    expect(await closed(client)).toEqual({ error: failure, local: true });
    const info = await serverClosed;
    expect(info.local).toBe(false);
    expect((info.error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
    expect(info.error!.message).not.toContain('crashed');
    expect(got).toEqual([{ last: true }]);
  });

  it('destroy() without an error closes the other end cleanly', async () => {
    const [client, server] = createMemoryPair();
    server.onMessage(() => {});
    const serverClosed = closed(server);
    client.destroy();
    expect(await serverClosed).toEqual({ local: false });
  });

  it('like an unread socket, an end that never subscribed does not notice the close until it does', async () => {
    const [client, server] = createMemoryPair();
    client.send({ unread: true });
    await client.close();
    await sleep(10);
    expect(server.closed).toBe(false);
    const got: Message[] = [];
    const serverClosed = closed(server);
    server.onMessage((message) => got.push(message));
    expect(await serverClosed).toEqual({ local: false });
    expect(got).toEqual([{ unread: true }]);
  });

  it('notices a close while no one is subscribed any more, dropping what nobody read', async () => {
    const [client, server] = createMemoryPair();
    server.onMessage(() => {}).dispose();
    client.send({ dropped: true });
    const serverClosed = closed(server);
    await client.close();
    expect(await serverClosed).toEqual({ local: false });
  });

  it('keeps messages that arrive with no subscriber for the next one, in order', async () => {
    const [client, server] = createMemoryPair();
    server.onMessage(() => {}).dispose();
    for (let n = 0; n < 5; n++) client.send({ n });
    await sleep(5);
    const got: Message[] = [];
    server.onMessage((message) => got.push(message));
    await sleep(5);
    expect(got.map((message) => message.n)).toEqual([0, 1, 2, 3, 4]);
  });

  it('stops delivering at once when a subscriber closes the transport mid-batch', async () => {
    const [client, server] = createMemoryPair();
    const got: Message[] = [];
    server.onMessage((message) => {
      got.push(message);
      if (message.n === 2) void server.close();
    });
    for (let n = 0; n < 5; n++) client.send({ n });
    await closed(server);
    expect(got.map((message) => message.n)).toEqual([0, 1, 2]);
  });

  it('gives two subscriptions of the same function two deliveries', async () => {
    const [client, server] = createMemoryPair();
    let calls = 0;
    const listener = (): void => {
      calls++;
    };
    server.onMessage(listener);
    const second = server.onMessage(listener);
    client.send({ n: 1 });
    await sleep(5);
    expect(calls).toBe(2);
    second.dispose();
    client.send({ n: 2 });
    await sleep(5);
    expect(calls).toBe(3);
  });
});

describe('MemoryListener', () => {
  it('hands the server end to subscribers with the identities given to connect', async () => {
    const listener = new MemoryListener();
    expect(listener.address).toBe('memory');
    const accepted = new Promise<Transport>((resolve) => listener.onConnection(resolve));
    const client = await listener.connect({ peer: clientPeer, serverPeer });
    const server = await accepted;
    expect(server.peer).toBe(clientPeer);
    expect(client.peer).toBe(serverPeer);
    const reply = new Promise<Message>((resolve) => client.onMessage(resolve));
    server.onMessage((message) => server.send({ echo: message }));
    client.send({ hi: 1 });
    expect(await reply).toEqual({ echo: { hi: 1 } });
  });

  it('defaults the identities', async () => {
    const listener = new MemoryListener();
    const accepted = new Promise<Transport>((resolve) => listener.onConnection(resolve));
    const client = await listener.connect();
    expect(client.peer).toBe(DEFAULT_MEMORY_PEER);
    expect((await accepted).peer).toBe(DEFAULT_MEMORY_PEER);
  });

  it('destroys connections nobody took when it closes, and refuses new ones', async () => {
    const listener = new MemoryListener('memory://x');
    const client = await listener.connect();
    const clientClosed = closed(client);
    client.onMessage(() => {});
    await listener.close();
    expect(listener.closed).toBe(true);
    expect((await clientClosed).local).toBe(false);
    const error = await rejectionOf(listener.connect());
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    expect(error.message).toContain('memory://x');
  });

  it('connector() reaches only its own address and applies its defaults', async () => {
    const listener = new MemoryListener('memory://agent');
    const accepted = new Promise<Transport>((resolve) => listener.onConnection(resolve));
    const connector = listener.connector({ peer: clientPeer });
    await connector.connect('memory://agent');
    expect((await accepted).peer).toBe(clientPeer);
    expect((await rejectionOf(connector.connect('memory://other'))).code).toBe(
      'ERR_APP_UNAVAILABLE',
    );
    const controller = new AbortController();
    controller.abort();
    expect(
      (await rejectionOf(connector.connect('memory://agent', { signal: controller.signal }))).code,
    ).toBe('ERR_ABORTED');
  });
});
