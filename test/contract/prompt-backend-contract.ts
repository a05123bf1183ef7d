/**
 * The contract every prompt backend passes: PolKit, Windows Hello, LocalAuthentication, the
 * scripted backend. Each backend's test file calls {@link runPromptBackendContract} with a setup
 * that knows how to make that backend answer without a person (a polkit rules file that says
 * YES or NO, a `pkttyagent` fed a password, a faked WinRT binding, a script).
 *
 * @module
 */

import { describe, expect, it } from 'vitest';
import type {
  PromptBackend,
  PromptOutcome,
  PromptRequest,
} from '../../src/prompt/prompt-backend.js';

/**
 * How the backend under test should answer its next prompt: `granted` and `denied` as a person
 * would; `hang` never answers until the prompt's signal fires (a person who walked away).
 */
export type ContractBehaviour = 'granted' | 'denied' | 'hang';

/** A backend set up for one contract test. */
export interface ContractBackend {
  readonly backend: PromptBackend;
  /**
   * Resolves once the prompt is on screen, so the abort test really aborts mid-prompt. Default:
   * waits 100 ms after `prompt()` was called.
   */
  readonly shown?: () => Promise<void>;
  /** How many prompts the backend has put on screen so far, when the harness can tell. */
  readonly promptsShown?: () => number;
  /** Releases what the setup created (agents, rules files, processes). */
  readonly cleanup?: () => void | Promise<void>;
}

/** What a backend's test supplies to {@link runPromptBackendContract}. */
export interface PromptBackendContractSetup {
  /**
   * Creates a backend that answers its next prompt as `behaviour` says. Return a string instead
   * to skip the test with that reason (e.g. "needs root to install a polkit rule").
   */
  create(
    behaviour: ContractBehaviour,
  ): ContractBackend | string | Promise<ContractBackend | string>;
  /** The request to prompt with (polkit needs a real subject). Default: {@link sampleRequest}. */
  request?: () => PromptRequest | Promise<PromptRequest>;
  /** How long a prompt that answers without a person may take, in ms. Default 5 000. */
  answerTimeoutMs?: number;
}

/** A plausible request from a CLI in a terminal, with a labelled claim. */
export function sampleRequest(): PromptRequest {
  return {
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'GNOME Terminal', program: 'node', pid: process.pid },
    claims: { name: 'contract-cli', reason: 'contract test' },
    sessionId: 'contract-session',
    subject: { pid: process.pid },
    unlocks: false,
  };
}

const RESULTS = ['granted', 'denied', 'cancelled', 'unavailable'];

/** Asserts `outcome` is exactly one of the four outcome shapes. */
export function expectOutcomeShape(outcome: unknown): asserts outcome is PromptOutcome {
  expect(typeof outcome === 'object' && outcome !== null, 'outcome must be an object').toBe(true);
  const { result, detail } = outcome as { result?: unknown; detail?: unknown };
  expect(RESULTS, `unexpected result ${String(result)}`).toContain(result);
  if (result === 'granted') {
    expect(detail, 'a granted outcome carries no detail').toBeUndefined();
  } else if (detail !== undefined) {
    expect(typeof detail).toBe('string');
  }
}

type Settled<T> =
  | { state: 'resolved'; value: T }
  | { state: 'rejected'; error: unknown }
  | { state: 'pending' };

/** Waits for `promise` at most `ms` of real time. */
async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Settled<T>>((resolve) => {
    timer = setTimeout(() => resolve({ state: 'pending' }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value): Settled<T> => ({ state: 'resolved', value }),
        (error: unknown): Settled<T> => ({ state: 'rejected', error }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Defines the contract tests for one backend.
 *
 * @example
 * ```ts
 * runPromptBackendContract('scripted', {
 *   create: (behaviour) => {
 *     const backend = new ScriptedPromptBackend({ manual: behaviour === 'hang', outcomes: behaviour === 'hang' ? [] : [behaviour] });
 *     return { backend, promptsShown: () => backend.requests.length };
 *   },
 * });
 * ```
 */
export function runPromptBackendContract(name: string, setup: PromptBackendContractSetup): void {
  const answerTimeoutMs = setup.answerTimeoutMs ?? 5_000;
  const request = async (): Promise<PromptRequest> => (setup.request ?? sampleRequest)();

  async function withBackend(
    behaviour: ContractBehaviour,
    skip: (note: string) => never,
    body: (harness: ContractBackend) => Promise<void>,
  ): Promise<void> {
    const created = await setup.create(behaviour);
    if (typeof created === 'string') skip(created);
    try {
      await body(created);
    } finally {
      await created.cleanup?.();
    }
  }

  describe(`prompt backend contract: ${name}`, () => {
    it('has a short, non-empty id', async (context) => {
      await withBackend(
        'granted',
        (note) => context.skip(note),
        async ({ backend }) => {
          expect(typeof backend.id).toBe('string');
          expect(backend.id).toMatch(/^[a-z0-9][a-z0-9-]{0,39}$/);
        },
      );
    });

    it('isAvailable resolves a boolean and never throws, even with an aborted signal', async (context) => {
      await withBackend(
        'granted',
        (note) => context.skip(note),
        async ({ backend }) => {
          const aborted = AbortSignal.abort();
          for (const call of [
            () => backend.isAvailable(),
            () => backend.isAvailable({}),
            () => backend.isAvailable({ signal: aborted }),
            () => backend.isAvailable({ signal: AbortSignal.timeout(1) }),
          ]) {
            let result: Promise<boolean>;
            expect(() => {
              result = call();
            }).not.toThrow();
            const settled = await settleWithin(result!, answerTimeoutMs);
            expect(settled.state).toBe('resolved');
            if (settled.state === 'resolved') expect(typeof settled.value).toBe('boolean');
          }
        },
      );
    });

    for (const answer of ['granted', 'denied'] as const) {
      it(`answers ${answer} with the ${answer} outcome shape`, async (context) => {
        await withBackend(
          answer,
          (note) => context.skip(note),
          async ({ backend }) => {
            const controller = new AbortController();
            const settled = await settleWithin(
              backend.prompt(await request(), { signal: controller.signal }),
              answerTimeoutMs,
            );
            expect(settled.state).toBe('resolved');
            if (settled.state !== 'resolved') return;
            expectOutcomeShape(settled.value);
            expect(settled.value.result).toBe(answer);
          },
        );
      });
    }

    it('does not answer a prompt nobody answers (hang stays pending)', async (context) => {
      await withBackend(
        'hang',
        (note) => context.skip(note),
        async ({ backend, shown }) => {
          const controller = new AbortController();
          const pending = backend.prompt(await request(), { signal: controller.signal });
          await (shown ?? (() => new Promise((resolve) => setTimeout(resolve, 100))))();
          const settled = await settleWithin(pending, 50);
          // A backend must not invent an answer, least of all a grant, while the person is silent.
          expect(settled.state).toBe('pending');
          controller.abort();
          await settleWithin(pending, 1_000);
        },
      );
    });

    it('settles within 1 s with cancelled (or rejects) when aborted mid-prompt', async (context) => {
      await withBackend(
        'hang',
        (note) => context.skip(note),
        async ({ backend, shown }) => {
          const controller = new AbortController();
          const pending = backend.prompt(await request(), { signal: controller.signal });
          await (shown ?? (() => new Promise((resolve) => setTimeout(resolve, 100))))();
          const started = performance.now();
          controller.abort();
          const settled = await settleWithin(pending, 1_000);
          expect(settled.state, 'the prompt must settle within 1 s of the abort').not.toBe(
            'pending',
          );
          expect(performance.now() - started).toBeLessThan(1_000);
          if (settled.state === 'resolved') {
            expectOutcomeShape(settled.value);
            expect(settled.value.result).toBe('cancelled');
          }
        },
      );
    });

    it('shows no prompt for an already-aborted signal, and never grants', async (context) => {
      await withBackend(
        'granted',
        (note) => context.skip(note),
        async ({ backend, promptsShown }) => {
          const before = promptsShown?.();
          const settled = await settleWithin(
            backend.prompt(await request(), { signal: AbortSignal.abort() }),
            1_000,
          );
          expect(settled.state).not.toBe('pending');
          if (settled.state === 'resolved') {
            expectOutcomeShape(settled.value);
            expect(settled.value.result).toBe('cancelled');
          }
          if (promptsShown !== undefined) expect(promptsShown()).toBe(before);
        },
      );
    });
  });
}
