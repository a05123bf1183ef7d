/**
 * The transport contract on the XPC transport (`listenXpc`/`connectXpc`) over the fake libxpc of
 * test/support/fake-xpc.ts: two fake processes in one fake launchd, both sides enforcing a
 * code-signing requirement the other satisfies. After each test, once the suite has destroyed
 * what it opened and closed the listener, every fake connection must have ended properly
 * (handler, one resume, one `invalid`, no misuse).
 *
 * The fake delivers what was sent before a cancel (the contract's "close flushes"), which Apple
 * documents otherwise for `xpc_connection_cancel`; see the module comment of src/transport/xpc.ts.
 */
import { afterEach } from 'vitest';
import { connectXpc, listenXpc } from '../../src/transport/xpc.js';
import { FakeXpc, FakeXpcWorld } from '../support/fake-xpc.js';
import { runTransportContract } from './transport-contract.js';

const SERVER_REQUIREMENT = 'identifier "com.example.secrets.relay" and anchor apple generic';
const CLIENT_REQUIREMENT = 'identifier "com.example.secrets.cli" and anchor apple generic';

const worlds: FakeXpcWorld[] = [];
let serviceNumber = 0;

afterEach(async () => {
  // Runs after the suite's own afterEach, which destroyed every transport and closed the listener.
  for (const world of worlds.splice(0)) {
    await world.idle();
    world.assertNoLeaks();
  }
});

runTransportContract('xpc (fake libxpc, requirements both ways)', async () => {
  const world = new FakeXpcWorld();
  worlds.push(world);
  const service = `com.example.contract${++serviceNumber}.relay`;
  world.register(service);
  const server = new FakeXpc(world, { pid: 3001, euid: 501, satisfies: [SERVER_REQUIREMENT] });
  const client = new FakeXpc(world, { pid: 3002, euid: 501, satisfies: [CLIENT_REQUIREMENT] });
  const listener = await listenXpc({ service, bindings: server, requirement: CLIENT_REQUIREMENT });
  return {
    listener,
    connect: (options) =>
      connectXpc({
        service,
        bindings: client,
        requirement: SERVER_REQUIREMENT,
        ...(options?.signal ? { signal: options.signal } : {}),
      }),
    cleanup: async () => {},
  };
});

runTransportContract('xpc (fake libxpc, no requirements, bindings from a loader)', async () => {
  const world = new FakeXpcWorld();
  worlds.push(world);
  const service = `com.example.contract${++serviceNumber}.relay`;
  world.register(service);
  const server = new FakeXpc(world, { pid: 3003, euid: 501 });
  const client = new FakeXpc(world, { pid: 3004, euid: 501 });
  const listener = await listenXpc({ service, bindings: async () => server });
  return {
    listener,
    connect: (options) =>
      connectXpc({
        service,
        bindings: () => client,
        ...(options?.signal ? { signal: options.signal } : {}),
      }),
    cleanup: async () => {},
  };
});
