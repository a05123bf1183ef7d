/**
 * A CLI talking to the app through the macOS relay: it checks, through libxpc, that the service
 * is the genuine relay before sending anything but an empty probe. Never run on a Mac.
 */

import { connect, connectXpc, requireCodeSignature } from 'bridgekeeper';
import { REQUIREMENTS, SERVICE } from './relay.js';

export async function readSecret(): Promise<unknown> {
  const client = await connect({
    app: 'example-secrets',
    transport: await connectXpc({ service: SERVICE, requirement: REQUIREMENTS.relay }),
    serverPolicies: [requireCodeSignature({ requirement: REQUIREMENTS.relay })],
  });
  try {
    return await client.request('secret');
  } finally {
    await client.close();
  }
}
