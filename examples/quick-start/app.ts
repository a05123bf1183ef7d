// The README's quick start, app side (kept here so that the typecheck covers it).
import { autoPromptBackend, createServer, HandlerError } from 'bridgekeeper';

const accounts = new Map([['work', { id: 'work', displayName: 'Acme Corp (work)' }]]);

const server = createServer({
  app: 'secrets-agent',
  // The OS's own prompt: PolKit on Linux (install the action file: docs/polkit.md).
  prompt: await autoPromptBackend({
    polkit: { actionId: 'com.example.secrets-agent.use-account' },
  }),
});

server.handle(
  'secrets.read',
  {
    // The account comes from the app's own records: its display name is shown in the prompt.
    account: (params: { account: string; item: string }) => {
      const account = accounts.get(params.account);
      if (!account) throw new HandlerError('ACCOUNT_NOT_FOUND', `No account "${params.account}".`);
      return account;
    },
  },
  async (params) => {
    // Runs only once this terminal session is authorized for the account.
    if (params.item !== 'db') throw new HandlerError('ITEM_NOT_FOUND', `No item "${params.item}".`);
    return { value: 'correct-horse-battery-staple' };
  },
);
await server.listen(); // $XDG_RUNTIME_DIR/secrets-agent/agent.sock, in a 0700 directory
