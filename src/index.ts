/**
 * Bridgekeeper: app-integrated authorization for local CLIs and scripts.
 *
 * A trusted app (`createServer`) holds accounts; clients (`connect`) ask it for them over local
 * IPC; the app identifies the caller through the kernel, places it in a terminal session, and
 * asks the person with the OS's own prompt before that session may use an account.
 *
 * Importing this module loads no native code: platform modules load on first use.
 *
 * @packageDocumentation
 */

export type {
  Client,
  ClientEvents,
  ConnectOptions,
  PromptNotice,
  QueuedNotice,
  RequestOptions,
} from './client.js';
export { connect } from './client.js';
export type { BridgekeeperErrorOptions, ErrorCode } from './errors.js';
export {
  AuthorizationError,
  BridgekeeperError,
  ERROR_CODES,
  HandlerError,
  isErrorCode,
  PeerError,
  PlatformError,
  ProtocolError,
  RemoteError,
  TransportError,
} from './errors.js';
export type { Platform, PlatformEndpoint } from './platform/platform.js';
export type {
  AuthenticodeCheck,
  PublisherMatcher,
  RequireAuthenticodeOptions,
  SameUserSidOptions,
  WindowsPolicyBindings,
} from './policy/authenticode.js';
export { requireAuthenticode, sameUserSid } from './policy/authenticode.js';
export type {
  CodeSignatureBindings,
  CodeSignatureCheck,
  RequireCodeSignatureOptions,
} from './policy/code-signature.js';
export { requireCodeSignature } from './policy/code-signature.js';
export { allOf, anyOf } from './policy/compose.js';
export type {
  AllowExecutablesOptions,
  ExecutableDigest,
  ExecutableFingerprint,
  ExecutableReader,
} from './policy/executable.js';
export { allowExecutables, systemExecutableReader } from './policy/executable.js';
export type { GroupEntry, GroupLookup, RequireGroupOptions } from './policy/group.js';
export { findGroup, lookupGroup, parseGroupFile, requireGroup } from './policy/group.js';
export type { PeerPolicy, PolicyDecision, PolicyVerdict } from './policy/peer-policy.js';
export { peerPredicate, sameUser } from './policy/peer-policy.js';
export type {
  AutoPromptBackendDependencies,
  AutoPromptBackendOptions,
} from './prompt/auto.js';
export { autoPromptBackend } from './prompt/auto.js';
export type {
  LocalAuthenticationBackend,
  LocalAuthenticationBackendOptions,
  LocalAuthenticationBindings,
  LocalAuthenticationDiagnosis,
  LocalAuthenticationPolicy,
  LocalAuthenticationProblem,
  LocalAuthenticationResult,
} from './prompt/local-authentication.js';
export {
  LA_ERROR,
  LA_POLICY,
  localAuthenticationPromptBackend,
  localAuthenticationReason,
} from './prompt/local-authentication.js';
export type {
  PolkitActionDescription,
  PolkitActionFileOptions,
  PolkitAuthority,
  PolkitBackend,
  PolkitBackendDependencies,
  PolkitBackendOptions,
  PolkitBinding,
  PolkitBusErrorKind,
  PolkitCheckResult,
  PolkitConnectOptions,
  PolkitDiagnosis,
  PolkitImplicitAuthorization,
  PolkitProblem,
  PolkitSubject,
} from './prompt/polkit/index.js';
export {
  createPolkitBackend,
  DEFAULT_POLKIT_CANCEL_GRACE_MS,
  DEFAULT_POLKIT_MESSAGE,
  DEFAULT_POLKIT_TIMEOUT_MS,
  DEFAULT_SYSTEM_BUS_ADDRESS,
  isValidPolkitActionId,
  POLKIT_ACTIONS_DIRECTORY,
  PolkitBusError,
  polkitActionFile,
  polkitActionFilePath,
  promptDetails,
} from './prompt/polkit/index.js';
export type {
  AccountRef,
  ClientClaims,
  ProcessDescription,
  PromptBackend,
  PromptOptions,
  PromptOutcome,
  PromptRequest,
} from './prompt/prompt-backend.js';
export type {
  WindowsHelloAvailability,
  WindowsHelloBackend,
  WindowsHelloBackendOptions,
  WindowsHelloBindings,
  WindowsHelloDiagnosis,
  WindowsHelloProblem,
  WindowsHelloResult,
  WindowsHelloWindow,
} from './prompt/windows-hello.js';
export { windowsHelloMessage, windowsHelloPromptBackend } from './prompt/windows-hello.js';
export type {
  ClosingNoticeParams,
  HelloParams,
  HelloResult,
  PromptNoticeParams,
  QueuedNoticeParams,
  RequestId,
  WireError,
} from './protocol/messages.js';
export { METHODS, PROTOCOL_VERSION, RPC_ERROR } from './protocol/messages.js';
export type {
  ConnectionInfo,
  Handler,
  ListenOptions,
  MethodOptions,
  RequestContext,
  Server,
  ServerEvents,
  ServerOptions,
} from './server.js';
export { createServer } from './server.js';
export type {
  AuthorizationRequest,
  AuthorizeOptions,
  AuthorizerEvents,
  AuthorizerOptions,
  DenialReason,
  ExpiryReason,
  GrantEvent,
  GrantInfo,
  RevocationReason,
} from './session/authorizer.js';
export {
  Authorizer,
  DEFAULT_DENIAL_COOLDOWN_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_LIFETIME_MS,
} from './session/authorizer.js';
export type { Clock } from './session/clock.js';
export { systemClock } from './session/clock.js';
export type {
  DeriveCredentialOptions,
  SessionCredential,
  SessionCredentialProvider,
  SessionScope,
} from './session/credentials.js';
export { describeOwnSession } from './session/own-session.js';
export { perProcessCredentials } from './session/peer-credentials.js';
export type {
  Endpoint,
  PrepareEndpointOptions,
  ResolveEndpointOptions,
} from './transport/endpoint.js';
export {
  MAX_SOCKET_PATH_BYTES,
  prepareEndpointDirectory,
  resolveEndpoint,
} from './transport/endpoint.js';
export type { LaunchdAgentPlistOptions } from './transport/launchd.js';
export {
  BUNDLE_LAUNCH_AGENTS_DIRECTORY,
  isValidLaunchdLabel,
  LAUNCH_AGENTS_DIRECTORY,
  launchdAgentPlist,
  launchdAgentPlistPath,
} from './transport/launchd.js';
export type { Relay, RelayEvent, RelayListenerOptions, RelayOptions } from './transport/relay.js';
export {
  createRelay,
  DEFAULT_RELAY_MAX_PENDING,
  RELAY_METHODS,
  RELAY_PROTOCOL_VERSION,
  relayListener,
} from './transport/relay.js';
export type {
  ConnectRelayOptions,
  ListenRelayOptions,
  RelayLocation,
} from './transport/relay-socket.js';
export { connectRelay, listenRelay } from './transport/relay-socket.js';
export type {
  CloseInfo,
  ConnectTransportOptions,
  Disposable,
  Message,
  PeerIdentity,
  Transport,
  TransportConnector,
  TransportListener,
} from './transport/transport.js';
export type {
  XpcBindings,
  XpcBindingsSource,
  XpcConnection,
  XpcConnectOptions,
  XpcEvent,
  XpcIdentify,
  XpcListenOptions,
  XpcMessageKind,
} from './transport/xpc.js';
export { connectXpc, listenXpc, XPC_KEYS, xpcPeerRequirement } from './transport/xpc.js';
