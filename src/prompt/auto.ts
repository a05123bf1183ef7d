/**
 * Picks the operating system's own prompt backend: polkit on Linux, Windows Hello on Windows,
 * LocalAuthentication (Touch ID, Apple Watch or the login password) on macOS. When none can
 * prompt, it says what to set up — it never falls back to something that grants without asking.
 *
 * @module
 */

import { createError } from '../errors.js';
import { createLog } from '../util/log.js';
import {
  type LocalAuthenticationBackendOptions,
  type LocalAuthenticationBindings,
  localAuthenticationPromptBackend,
} from './local-authentication.js';
import { polkitActionFilePath } from './polkit/action-file.js';
import type { PolkitBinding } from './polkit/dbus-binding.js';
import {
  createPolkitBackend,
  type PolkitBackend,
  type PolkitBackendOptions,
  type PolkitDiagnosis,
} from './polkit/polkit-backend.js';
import type { PromptBackend } from './prompt-backend.js';

import {
  type WindowsHelloBackendOptions,
  type WindowsHelloBindings,
  windowsHelloPromptBackend,
} from './windows-hello.js';

const debug = createLog('bridgekeeper:prompt');

/** Options for {@link autoPromptBackend}: one entry per backend the app supports. */
export interface AutoPromptBackendOptions {
  /** The polkit backend's options (Linux). `actionId` is required there. */
  polkit?: PolkitBackendOptions;
  /** The Windows Hello backend's options (Windows): the app's window, so the dialog comes to the front. */
  windowsHello?: WindowsHelloBackendOptions;
  /** The LocalAuthentication backend's options (macOS), e.g. the reason text. */
  localAuthentication?: Omit<LocalAuthenticationBackendOptions, 'bindings'>;
  /** Cancels the availability checks. */
  signal?: AbortSignal;
}

/** What {@link autoPromptBackend} takes besides its options (tests pass fakes). */
export interface AutoPromptBackendDependencies {
  /** The OS to choose for. Default `process.platform`. */
  platform?: NodeJS.Platform;
  /** The polkit D-Bus binding. Default: the real one. */
  polkitBinding?: PolkitBinding;
  /** The Windows Hello bindings. Default: the real ones. */
  windowsHelloBindings?: WindowsHelloBindings;
  /** The LocalAuthentication bindings. Default: the real ones. */
  localAuthenticationBindings?: LocalAuthenticationBindings;
}

/**
 * Resolves with the platform's prompt backend once it said it can prompt: on Linux the polkit
 * backend, when the system bus and polkitd answer and the app's action is installed; on Windows
 * Windows Hello, when it is set up for the user; on macOS LocalAuthentication, when the Mac can
 * verify its owner (Touch ID, an Apple Watch, or at least a login password).
 *
 * It cannot tell in advance whether an authentication agent runs in the person's session; when
 * none does, prompts answer `unavailable` (`ERR_PROMPT_UNAVAILABLE`), saying so.
 *
 * @throws (rejects with) `ERR_PROMPT_UNAVAILABLE` when no backend can prompt — the message says
 * exactly what to install (the action file and where, polkitd, an authentication agent);
 * `ERR_INVALID_ARGUMENT` on Linux without `polkit.actionId`.
 *
 * @example
 * ```ts
 * import { autoPromptBackend, createServer } from 'bridgekeeper';
 *
 * const prompt = await autoPromptBackend({
 *   polkit: { actionId: 'com.example.secrets-agent.use-account' },
 * });
 * const server = createServer({ app: 'secrets-agent', prompt });
 * ```
 */
export async function autoPromptBackend(
  options: AutoPromptBackendOptions = {},
  dependencies: AutoPromptBackendDependencies = {},
): Promise<PromptBackend> {
  const platform = dependencies.platform ?? process.platform;
  switch (platform) {
    case 'linux': {
      const polkitOptions = options.polkit;
      if (polkitOptions === undefined || typeof polkitOptions.actionId !== 'string') {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          "autoPromptBackend needs polkit.actionId on Linux: the id of the app's polkit action (e.g. 'com.example.app.use-account').",
        );
      }
      const backend = createPolkitBackend(
        polkitOptions,
        dependencies.polkitBinding === undefined ? {} : { binding: dependencies.polkitBinding },
      );
      const diagnosis = await backend.diagnose(
        options.signal === undefined ? {} : { signal: options.signal },
      );
      if (diagnosis.available) {
        debug('using the polkit backend (%s)', diagnosis.detail);
        return backend;
      }
      await backend.close();
      debug('polkit backend unavailable: %s', diagnosis.detail);
      throw createError('ERR_PROMPT_UNAVAILABLE', polkitInstructions(backend, diagnosis));
    }
    case 'win32': {
      const backend = windowsHelloPromptBackend({
        ...options.windowsHello,
        ...(dependencies.windowsHelloBindings
          ? { bindings: dependencies.windowsHelloBindings }
          : {}),
      });
      const diagnosis = await backend.diagnose(
        options.signal === undefined ? {} : { signal: options.signal },
      );
      if (diagnosis.available) {
        debug('using the Windows Hello backend');
        return backend;
      }
      debug('Windows Hello unavailable: %s', diagnosis.detail);
      throw createError('ERR_PROMPT_UNAVAILABLE', diagnosis.detail);
    }
    case 'darwin': {
      const backend = localAuthenticationPromptBackend({
        ...options.localAuthentication,
        ...(dependencies.localAuthenticationBindings
          ? { bindings: dependencies.localAuthenticationBindings }
          : {}),
      });
      const diagnosis = await backend.diagnose(
        options.signal === undefined ? {} : { signal: options.signal },
      );
      if (diagnosis.available) {
        debug('using the LocalAuthentication backend (%s)', diagnosis.detail);
        return backend;
      }
      debug('LocalAuthentication unavailable: %s', diagnosis.detail);
      throw createError(
        'ERR_PROMPT_UNAVAILABLE',
        `No prompt backend can ask you: ${diagnosis.detail}.`,
      );
    }
    default:
      throw createError(
        'ERR_PROMPT_UNAVAILABLE',
        `No prompt backend can ask you on ${platform} in this version of Bridgekeeper: polkit (Linux), Windows Hello (Windows) and LocalAuthentication (macOS) exist. For tests and demos, ScriptedPromptBackend from bridgekeeper/testing answers from a script (never for real secrets).`,
      );
  }
}

const AGENT_HINT =
  'A polkit authentication agent must also run in your session to ask you: desktops (GNOME, KDE, Xfce, …) start one; in a terminal or over SSH, run pkttyagent.';

function polkitInstructions(backend: PolkitBackend, diagnosis: PolkitDiagnosis): string {
  const file = polkitActionFilePath(backend.actionId);
  const action = `Then install the app's polkit action file ${file} (generate it with polkitActionFile({ actionId: '${backend.actionId}', owner: '<the user the app runs as>' }), root-owned, mode 0644; see docs/polkit.md).`;
  switch (diagnosis.problem) {
    case 'bus-unreachable':
      return `No prompt backend can ask you: polkit needs the D-Bus system bus, and nothing answers at ${diagnosis.busAddress}. Install and start D-Bus and polkit (Debian/Ubuntu: apt install dbus polkitd; Fedora: dnf install polkit; Arch: pacman -S polkit). ${action} ${AGENT_HINT}`;
    case 'polkitd-unavailable':
      return `No prompt backend can ask you: polkitd does not answer on the system bus (${diagnosis.busAddress}). Install polkit (Debian/Ubuntu: apt install polkitd; Fedora: dnf install polkit; Arch: pacman -S polkit) and start it (systemctl start polkit). ${action} ${AGENT_HINT}`;
    case 'action-missing':
      return `No prompt backend can ask you: the polkit action ${backend.actionId} is not installed. Generate it with polkitActionFile({ actionId: '${backend.actionId}', owner: '<the user the app runs as>' }) and install it as ${file} (root-owned, mode 0644; distribution packages ship it there, see docs/polkit.md). polkitd picks it up without a restart. ${AGENT_HINT}`;
    default:
      return `No prompt backend can ask you: polkit did not answer (${diagnosis.detail}). Check that polkitd runs (systemctl status polkit) and that ${file} is installed. ${AGENT_HINT}`;
  }
}
