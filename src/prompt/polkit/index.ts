/**
 * The polkit prompt backend (Linux): the backend, its action-file generator, and the D-Bus
 * binding's types (for tests that pass a fake binding). Importing this module loads no D-Bus
 * code; the client loads on the backend's first call.
 *
 * @module
 */

export type {
  PolkitActionFileOptions,
  PolkitImplicitAuthorization,
} from './action-file.js';
export {
  DEFAULT_POLKIT_MESSAGE,
  isValidPolkitActionId,
  POLKIT_ACTIONS_DIRECTORY,
  polkitActionFile,
  polkitActionFilePath,
} from './action-file.js';
export type {
  PolkitActionDescription,
  PolkitAuthority,
  PolkitBinding,
  PolkitBusErrorKind,
  PolkitCheckResult,
  PolkitConnectOptions,
  PolkitSubject,
} from './dbus-binding.js';
export { DEFAULT_SYSTEM_BUS_ADDRESS, PolkitBusError } from './dbus-binding.js';
export type {
  PolkitBackend,
  PolkitBackendDependencies,
  PolkitBackendOptions,
  PolkitDiagnosis,
  PolkitProblem,
} from './polkit-backend.js';
export {
  createPolkitBackend,
  DEFAULT_POLKIT_CANCEL_GRACE_MS,
  DEFAULT_POLKIT_TIMEOUT_MS,
  promptDetails,
} from './polkit-backend.js';
