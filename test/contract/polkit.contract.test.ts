/**
 * The prompt-backend contract on the real polkit backend, against a real polkitd: a rule says
 * YES or NO for the non-root subject, and a `pkttyagent` that nobody answers plays the person who
 * walked away. Skipped, with the reason in the suite's name, without root or polkitd.
 */

import { afterAll, beforeAll } from 'vitest';
import {
  dbusPolkitBinding,
  type PolkitAuthority,
  type PolkitBinding,
} from '../../src/prompt/polkit/dbus-binding.js';
import { createPolkitBackend } from '../../src/prompt/polkit/polkit-backend.js';
import {
  POLKIT_REQUIREMENTS,
  type PolkitEnvironment,
  polkitSkipReason,
  setupPolkit,
  TEST_ACTIONS,
  type TestAgent,
  type TestSubject,
} from '../support/polkit.js';
import { runPromptBackendContract, sampleRequest } from './prompt-backend-contract.js';

const skipReason = polkitSkipReason();
if (skipReason !== undefined) console.log(`polkit contract tests skipped: ${skipReason}`);

let env: PolkitEnvironment | undefined;
/** The subject of the current test's prompts (set by create()). */
let current: TestSubject | undefined;

beforeAll(async () => {
  if (skipReason === undefined) env = await setupPolkit();
}, 240_000);

afterAll(async () => {
  await env?.teardown();
}, 60_000);

/** The real binding, counting the checks it sends (the prompts polkit was asked to show). */
function countingBinding(): { binding: PolkitBinding; checks: () => number } {
  let checks = 0;
  const binding: PolkitBinding = {
    async connect(options) {
      const authority = await dbusPolkitBinding.connect(options);
      const counted: PolkitAuthority = {
        checkAuthorization: (...args) => {
          checks++;
          return authority.checkAuthorization(...args);
        },
        cancelCheckAuthorization: (id) => authority.cancelCheckAuthorization(id),
        enumerateActions: (locale) => authority.enumerateActions(locale),
        get closed() {
          return authority.closed;
        },
        close: () => authority.close(),
      };
      return counted;
    },
  };
  return { binding, checks: () => checks };
}

runPromptBackendContract(
  `polkit (real polkitd; ${skipReason === undefined ? POLKIT_REQUIREMENTS : `skipped: ${skipReason}`})`,
  {
    async create(behaviour) {
      if (env === undefined)
        return `${skipReason ?? 'polkit setup failed'} (${POLKIT_REQUIREMENTS})`;
      const subject = await env.spawnSubject();
      current = subject;
      let agent: TestAgent | undefined;
      const actionId =
        behaviour === 'granted'
          ? TEST_ACTIONS.yes
          : behaviour === 'denied'
            ? TEST_ACTIONS.no
            : TEST_ACTIONS.challenge;
      // The person who walked away: an agent shows the dialog and nobody types.
      if (behaviour === 'hang') agent = await env.startAgent(subject);
      const { binding, checks } = countingBinding();
      const backend = createPolkitBackend({ actionId }, { binding });
      return {
        backend,
        ...(agent === undefined ? {} : { shown: () => agent.promptShown() }),
        promptsShown: checks,
        cleanup: async () => {
          agent?.stop();
          subject.kill();
          current = undefined;
          await backend.close();
        },
      };
    },
    request: () => {
      if (current === undefined) return sampleRequest();
      return {
        ...sampleRequest(),
        subject: { pid: current.pid, startTime: current.startTime, uid: current.uid },
      };
    },
  },
);
