/**
 * The relay helper of a macOS app (the seed's "Browser Helper"), as a launch agent would run it:
 *
 *   node --import tsx examples/macos-relay/relay.ts        (on a Mac; never run: see docs/macos.md)
 *
 * It offers two XPC mach services, registered by its launchd job (`launchdPlist()` below):
 * `com.example.secrets.relay` for the CLIs and `com.example.secrets.relay.app` for the app.
 * libxpc checks every message against the code-signing requirement of its service, and the relay
 * passes messages between the app and each CLI. Ship it as a single signed executable (a Node
 * SEA), not as a script: a signature covers the binary, not a script it loads.
 */

import { pathToFileURL } from 'node:url';
import {
  createRelay,
  launchdAgentPlist,
  listenXpc,
  type Relay,
  requireCodeSignature,
  sameUser,
} from 'bridgekeeper';

/** Your Team ID (`codesign -dv --verbose=4 <program>` shows it as TeamIdentifier). */
const TEAM = 'anchor apple generic and certificate leaf[subject.OU] = "ABCDE12345"';
export const REQUIREMENTS = {
  relay: `${TEAM} and identifier "com.example.secrets.relay"`,
  app: `${TEAM} and identifier "com.example.secrets"`,
  cli: `${TEAM} and identifier "com.example.secrets.cli"`,
} as const;
export const SERVICE = 'com.example.secrets.relay';
export const APP_SERVICE = `${SERVICE}.app`;

/** Starts the relay on both services. */
export async function startRelay(): Promise<Relay> {
  return createRelay({
    listener: await listenXpc({ service: SERVICE, requirement: REQUIREMENTS.cli }),
    appListener: await listenXpc({ service: APP_SERVICE, requirement: REQUIREMENTS.app }),
    // libxpc enforces these on every message; the policies admit exactly those connections.
    appPolicies: [requireCodeSignature({ requirement: REQUIREMENTS.app })],
    clientPolicies: [sameUser(), requireCodeSignature({ requirement: REQUIREMENTS.cli })],
    onEvent: (event) => {
      console.error(`[relay] ${event.type}`);
      // A service launchd did not give this process (not started by its job) ends at once:
      // exit, and let launchd start the helper again when someone connects.
      if (event.type === 'listener-error') {
        console.error(`[relay] ${event.error.message}`);
        process.exit(1);
      }
    },
  });
}

/** The launchd agent definition that registers both services (write it before signing). */
export function launchdPlist(): string {
  return launchdAgentPlist({
    label: SERVICE,
    bundleProgram: 'Contents/MacOS/secrets-relay',
    machServices: [SERVICE, APP_SERVICE],
    // launchd starts the helper when someone connects to a service.
    runAtLoad: false,
    keepAlive: false,
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (process.argv.includes('--print-plist')) {
    process.stdout.write(launchdPlist());
  } else {
    try {
      const relay = await startRelay();
      process.once('SIGTERM', () => void relay.close());
    } catch (error) {
      console.error(`[relay] ${(error as Error).message}`);
      process.exitCode = 1;
    }
  }
}
