/**
 * Test helpers for people testing their own Bridgekeeper apps and CLIs, with no OS involved:
 * an in-memory transport pair and listener, a fake clock, and a scripted prompt backend.
 *
 * @example
 * ```ts
 * import { connect, createServer } from 'bridgekeeper';
 * import { FakeClock, MemoryListener, ScriptedPromptBackend } from 'bridgekeeper/testing';
 *
 * const clock = new FakeClock();
 * const prompt = new ScriptedPromptBackend({ outcomes: ['granted'] });
 * const server = createServer({ app: 'test-app', prompt, clock });
 * server.handle('ping', { account: () => 'work' }, () => 'pong');
 * const listener = new MemoryListener();
 * await server.listen({ listener });
 * const client = await connect({ app: 'test-app', transport: await listener.connect() });
 * await client.request('ping'); // prompts once (scripted: granted)
 * clock.advance(10 * 60_000);   // idle timeout passes
 * ```
 *
 * @packageDocumentation
 */

export type { ScriptedOutcome, ScriptedPrompt, ScriptedPromptOptions } from './prompt/scripted.js';
export { ScriptedPromptBackend } from './prompt/scripted.js';
export { perProcessCredentials } from './session/peer-credentials.js';
export type { FakeClockOptions } from './testing/fake-clock.js';
export { FakeClock } from './testing/fake-clock.js';
export type { MemoryConnectOptions, MemoryPairOptions } from './transport/memory.js';
export { createMemoryPair, DEFAULT_MEMORY_PEER, MemoryListener } from './transport/memory.js';
