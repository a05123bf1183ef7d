/**
 * The prompt-backend contract on the polkit backend's logic, with a fake D-Bus binding playing
 * polkitd (the same suite runs against a real polkitd in test/contract/polkit.contract.test.ts).
 */

import { createPolkitBackend } from '../../../src/prompt/polkit/polkit-backend.js';
import { runPromptBackendContract, sampleRequest } from '../../contract/prompt-backend-contract.js';
import { ACTION_ID, AUTHORIZED, FakeBinding, NOT_AUTHORIZED } from './fake-binding.js';

runPromptBackendContract('polkit (fake D-Bus binding)', {
  create(behaviour) {
    const binding = new FakeBinding({
      script: () =>
        behaviour === 'granted' ? AUTHORIZED : behaviour === 'denied' ? NOT_AUTHORIZED : undefined,
    });
    const backend = createPolkitBackend({ actionId: ACTION_ID }, { binding });
    return {
      backend,
      shown: async () => {
        await new Promise<void>((resolve) => {
          const poll = () => (binding.checks.length > 0 ? resolve() : setTimeout(poll, 1));
          poll();
        });
      },
      promptsShown: () => binding.checks.length,
      cleanup: () => backend.close(),
    };
  },
  request: () => ({ ...sampleRequest(), subject: { pid: 4242, startTime: '99', uid: 1000 } }),
});
