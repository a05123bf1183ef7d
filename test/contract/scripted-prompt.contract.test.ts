import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import { runPromptBackendContract } from './prompt-backend-contract.js';

runPromptBackendContract('scripted (automatic)', {
  create(behaviour) {
    if (behaviour === 'hang') {
      // Automatic mode answers by itself; a never-answering `decide` plays the silent person.
      const backend = new ScriptedPromptBackend({ decide: () => new Promise(() => {}) });
      return { backend, promptsShown: () => backend.requests.length };
    }
    const backend = new ScriptedPromptBackend({ outcomes: [behaviour] });
    return { backend, promptsShown: () => backend.requests.length };
  },
});

runPromptBackendContract('scripted (delayed)', {
  create(behaviour) {
    const backend = new ScriptedPromptBackend({
      delayMs: behaviour === 'hang' ? 60_000 : 20,
      outcomes: behaviour === 'hang' ? ['granted'] : [behaviour],
    });
    return { backend, promptsShown: () => backend.requests.length };
  },
});

runPromptBackendContract('scripted (manual)', {
  create(behaviour) {
    const backend = new ScriptedPromptBackend({ id: 'scripted-manual', manual: true });
    let shown: Promise<unknown> = backend.nextPrompt();
    if (behaviour !== 'hang') {
      shown = shown.then((prompt) =>
        (prompt as { respond(o: string): boolean }).respond(behaviour),
      );
    }
    return {
      backend,
      shown: async () => {
        await shown;
      },
      promptsShown: () => backend.requests.length,
    };
  },
});
