import { describe, expect, it, vi } from 'vitest';
import type { CloseInfo, Message, Transport } from '../../src/transport/transport.js';
import {
  ConnectionEvents,
  reportListenerError,
  TransportEvents,
} from '../../src/transport/transport-events.js';

/** Runs `body` and returns what it handed to queueMicrotask, instead of running it. */
function capturingMicrotasks(body: () => void): Array<() => void> {
  const captured: Array<() => void> = [];
  const spy = vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((callback) => {
    captured.push(callback);
  });
  try {
    body();
  } finally {
    spy.mockRestore();
  }
  return captured;
}

const nextMicrotask = (): Promise<void> => new Promise((resolve) => queueMicrotask(resolve));

describe('reportListenerError', () => {
  it('rethrows the error later, never inside the call', () => {
    const error = new Error('from a subscriber');
    const [rethrow, ...rest] = capturingMicrotasks(() => reportListenerError(error));
    expect(rest).toEqual([]);
    expect(rethrow).toThrow(error);
  });
});

describe('TransportEvents', () => {
  it('makes every onMessage call its own subscription, called in order', () => {
    const events = new TransportEvents<Message>();
    const got: string[] = [];
    const listener = (message: Message): void => {
      got.push(`a${message.n}`);
    };
    const first = events.onMessage(listener, () => {});
    events.onMessage(listener, () => {});
    events.onMessage(
      (message) => got.push(`b${message.n}`),
      () => {},
    );
    events.emit({ n: 1 });
    first.dispose();
    events.emit({ n: 2 });
    expect(got).toEqual(['a1', 'a1', 'b1', 'a2', 'b2']);
    expect(events.hasMessageListeners).toBe(true);
  });

  it('tells the transport about each subscription, and which one came first', () => {
    const events = new TransportEvents<Message>();
    const calls: boolean[] = [];
    expect(events.started).toBe(false);
    events
      .onMessage(
        () => {},
        (first) => calls.push(first),
      )
      .dispose();
    expect(events.started).toBe(true);
    expect(events.hasMessageListeners).toBe(false);
    events.onMessage(
      () => {},
      (first) => calls.push(first),
    );
    expect(calls).toEqual([true, false]);
  });

  it('stops emitting as soon as the transport is no longer open', () => {
    const events = new TransportEvents<Message>();
    const got: string[] = [];
    events.onMessage(
      () => {
        got.push('first');
        events.state = 'closing';
      },
      () => {},
    );
    events.onMessage(
      () => got.push('second'),
      () => {},
    );
    events.emit({});
    expect(got).toEqual(['first']);
  });

  it('reports a throwing subscriber asynchronously and still calls the others', () => {
    const events = new TransportEvents<Message>();
    const error = new Error('boom');
    const got: string[] = [];
    events.onMessage(
      () => {
        throw error;
      },
      () => {},
    );
    events.onMessage(
      () => got.push('message'),
      () => {},
    );
    events.onClose(() => {
      throw error;
    });
    events.onClose(() => got.push('close'));
    const reported = capturingMicrotasks(() => {
      events.emit({});
      events.finish({ local: true });
    });
    expect(got).toEqual(['message', 'close']);
    expect(reported).toHaveLength(2);
    for (const rethrow of reported) expect(rethrow).toThrow(error);
  });

  it('finishes once: drops the queue and message subscribers, tells close subscribers in order, resolves closed', async () => {
    const events = new TransportEvents<number>();
    const got: unknown[] = [];
    let resolved = false;
    void events.closed.then(() => {
      resolved = true;
    });
    events.onMessage(
      () => got.push('message'),
      () => {},
    );
    events.onClose((info) => got.push(['a', info]));
    events.onClose((info) => got.push(['b', info])).dispose();
    events.onClose((info) => got.push(['c', info]));
    events.queue.push(1, 2);
    const info: CloseInfo = { local: false };
    events.finish(info);
    expect(events.state).toBe('closed');
    expect(got).toEqual([
      ['a', info],
      ['c', info],
    ]);
    expect(events.queue).toEqual([]);
    expect(events.hasMessageListeners).toBe(false);
    events.finish({ local: true });
    expect(got).toHaveLength(2);
    await events.closed;
    expect(resolved).toBe(true);
  });

  it('after the close, subscribes no message listener and replays the close in a microtask', async () => {
    const events = new TransportEvents<Message>();
    const error = new Error('gone');
    events.finish({ error, local: false });
    const subscribed = vi.fn();
    events.onMessage(() => {}, subscribed).dispose();
    expect(subscribed).not.toHaveBeenCalled();
    expect(events.hasMessageListeners).toBe(false);

    const late: CloseInfo[] = [];
    events.onClose((info) => late.push(info));
    events.onClose((info) => late.push(info)).dispose();
    expect(late).toEqual([]);
    await nextMicrotask();
    expect(late).toEqual([{ error, local: false }]);
  });

  it('drops the queue by replacing it, so a delivery loop holding the old one can tell', () => {
    const events = new TransportEvents<number>();
    const queue = events.queue;
    queue.push(1);
    events.dropQueue();
    expect(events.queue).not.toBe(queue);
    expect(events.queue).toEqual([]);
  });
});

describe('ConnectionEvents', () => {
  const transport = (name: string): Transport => ({ name }) as unknown as Transport;

  it('holds connections until the first subscriber, then hands them over in order, in a microtask', async () => {
    const connections = new ConnectionEvents(() => true);
    const got: Transport[] = [];
    const [a, b, c] = [transport('a'), transport('b'), transport('c')];
    connections.deliver(a);
    connections.deliver(b);
    connections.onConnection((t) => got.push(t));
    // Queued behind the ones still held.
    connections.deliver(c);
    expect(got).toEqual([]);
    await nextMicrotask();
    expect(got).toEqual([a, b, c]);
    const d = transport('d');
    connections.deliver(d);
    expect(got).toEqual([a, b, c, d]);
  });

  it('hands nothing held over once it no longer accepts', async () => {
    let accepting = true;
    const connections = new ConnectionEvents(() => accepting);
    const got: Transport[] = [];
    connections.deliver(transport('a'));
    connections.onConnection((t) => got.push(t));
    accepting = false;
    await nextMicrotask();
    expect(got).toEqual([]);
  });

  it('close() discards what is held, then unsubscribes everyone', async () => {
    const connections = new ConnectionEvents(() => true);
    const [a, b] = [transport('a'), transport('b')];
    connections.deliver(a);
    connections.deliver(b);
    const got: Transport[] = [];
    connections.onConnection((t) => got.push(t));
    const discarded: Transport[] = [];
    connections.close((t) => discarded.push(t));
    expect(discarded).toEqual([a, b]);
    await nextMicrotask();
    expect(got).toEqual([]);
    connections.deliver(transport('c'));
    expect(got).toEqual([]);
  });
});
