/**
 * The harness the Authorizer tests share: an Authorizer on a fake clock whose events are
 * recorded in order, with helpers to read them back.
 */
import type { PromptBackend } from '../../src/prompt/prompt-backend.js';
import {
  Authorizer,
  type AuthorizerEvents,
  type AuthorizerOptions,
} from '../../src/session/authorizer.js';
import type { FakeClock } from '../../src/testing/fake-clock.js';

/** One recorded event: its name and its payload. */
export type Recorded = {
  [E in keyof AuthorizerEvents]: [E, AuthorizerEvents[E]];
}[keyof AuthorizerEvents];

/** Every event the Authorizer emits, in the order the harness subscribes to them. */
export const EVENT_NAMES = [
  'granted',
  'denied',
  'used',
  'expired',
  'revoked',
  'locked',
  'unlocked',
  'prompt',
] as const;

/** Lets pending promise callbacks run. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * An Authorizer over `prompt` on `clock`, recording every event it emits into `events`;
 * `named(name)` returns the payloads of one kind of event.
 */
export function recordingAuthorizer(
  prompt: PromptBackend,
  clock: FakeClock,
  options: Partial<AuthorizerOptions> = {},
) {
  const authorizer = new Authorizer({ prompt, clock, ...options });
  const events: Recorded[] = [];
  for (const name of EVENT_NAMES) {
    authorizer.on(name, (payload) => events.push([name, payload] as Recorded));
  }
  const named = <E extends keyof AuthorizerEvents>(name: E): AuthorizerEvents[E][] =>
    events.filter((event) => event[0] === name).map((event) => event[1] as AuthorizerEvents[E]);
  return { authorizer, events, named };
}
