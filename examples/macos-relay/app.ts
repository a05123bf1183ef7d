/**
 * The app's side of the macOS relay (examples/macos-relay/relay.ts): connect to the relay's app
 * service, check that it is the genuine relay, register, and serve the CLIs it relays — with
 * Touch ID (or the login password) as the prompt. Never run on a Mac: see docs/macos.md.
 */

import {
  autoPromptBackend,
  connectXpc,
  createServer,
  relayListener,
  requireCodeSignature,
  type Server,
} from 'bridgekeeper';
import { APP_SERVICE, REQUIREMENTS } from './relay.js';

export async function serveThroughRelay(): Promise<Server> {
  const server = createServer({
    app: 'example-secrets',
    prompt: await autoPromptBackend({
      localAuthentication: {
        reason: (request) =>
          `show “${request.account.displayName}” to ${request.process.program ?? 'a program'}`,
      },
    }),
  });
  server.handle('secret', { account: () => ({ id: 'work', displayName: 'Work' }) }, () => ({
    password: 'correct horse battery staple',
  }));
  const transport = await connectXpc({ service: APP_SERVICE, requirement: REQUIREMENTS.relay });
  await server.listen({
    listener: await relayListener(transport, {
      relayPolicies: [requireCodeSignature({ requirement: REQUIREMENTS.relay })],
    }),
  });
  // The relay went away (logged out, helper switched off): reconnect, or tell the person.
  server.on('error', ({ error }) => console.error('[app]', error));
  return server;
}
