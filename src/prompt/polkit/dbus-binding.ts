/**
 * The D-Bus side of the polkit backend: `org.freedesktop.PolicyKit1.Authority` on the system bus,
 * reduced to the three calls the backend makes.
 *
 * This is the only file that touches the D-Bus client (`@jellybrick/dbus-next`, the maintained
 * fork of dbus-next), and it loads it with a dynamic `import()` the first time
 * {@link dbusPolkitBinding} connects, so importing the package root loads no D-Bus code. The
 * backend's logic takes a {@link PolkitBinding}, so tests pass a fake one.
 *
 * What this module adds to the client, and why:
 * - Pending calls are rejected when the connection ends. The client never settles a call whose
 *   reply cannot come any more (the bus went away), and a prompt that hangs forever is worse
 *   than one that fails closed.
 * - The socket is unref'd while no call is pending, so a script that only asked
 *   `isAvailable()` can exit without closing the backend.
 * - Errors are one class, {@link PolkitBusError}, with the D-Bus error name, so the backend maps
 *   them without knowing the client's error type.
 *
 * @module
 */

import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { loadOnce } from '../../util/load-once.js';
import { createLog } from '../../util/log.js';

const debug = createLog('bridgekeeper:polkit');

/** The default system bus address (`DBUS_SYSTEM_BUS_ADDRESS` overrides it, as in libdbus). */
export const DEFAULT_SYSTEM_BUS_ADDRESS = 'unix:path=/run/dbus/system_bus_socket';

const POLKIT_NAME = 'org.freedesktop.PolicyKit1';
const AUTHORITY_PATH = '/org/freedesktop/PolicyKit1/Authority';
const AUTHORITY_INTERFACE = 'org.freedesktop.PolicyKit1.Authority';

/** `CheckAuthorizationFlags.AllowUserInteraction`: let an authentication agent ask the person. */
export const ALLOW_USER_INTERACTION = 1;

/** The process polkit is asked about: the peer, as the kernel identified it. */
export interface PolkitSubject {
  /** Process id. */
  readonly pid: number;
  /** Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which polkit compares. */
  readonly startTime: bigint;
  /** The process's uid, from the kernel (`SO_PEERCRED`). */
  readonly uid: number;
}

/** What `CheckAuthorization` answered. */
export interface PolkitCheckResult {
  /** The subject is authorized (by a rule, an implicit default, or a person at an agent). */
  readonly isAuthorized: boolean;
  /** Not authorized, but could be after authentication (no agent took the challenge). */
  readonly isChallenge: boolean;
  /** polkit's details (`polkit.dismissed`, `polkit.retains_authorization_after_challenge`, …). */
  readonly details: Readonly<Record<string, string>>;
}

/** One registered action, from `EnumerateActions`. */
export interface PolkitActionDescription {
  readonly actionId: string;
  readonly description: string;
  readonly message: string;
  readonly vendorName: string;
  /** `org.freedesktop.policykit.owner` and friends. */
  readonly annotations: Readonly<Record<string, string>>;
}

/**
 * How a call failed: `unreachable` — no bus to connect to (no socket, refused, handshake failed
 * or timed out); `disconnected` — the connection ended while the call was pending or before it
 * was sent; `reply` — the bus or polkitd answered with a D-Bus error (see `dbusName`);
 * `malformed` — the reply did not have the documented shape.
 */
export type PolkitBusErrorKind = 'unreachable' | 'disconnected' | 'reply' | 'malformed';

/** A failed D-Bus call or connection. */
export class PolkitBusError extends Error {
  /** See {@link PolkitBusErrorKind}. */
  readonly kind: PolkitBusErrorKind;
  /** The D-Bus error name for `reply` errors (`org.freedesktop.PolicyKit1.Error.Failed`, …). */
  readonly dbusName: string | undefined;

  constructor(
    kind: PolkitBusErrorKind,
    message: string,
    options: { dbusName?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PolkitBusError';
    this.kind = kind;
    this.dbusName = options.dbusName;
  }
}

/** A connection to polkit's authority. Every method rejects with {@link PolkitBusError}. */
export interface PolkitAuthority {
  /** `CheckAuthorization(subject, action_id, details, flags, cancellation_id)`. */
  checkAuthorization(
    subject: PolkitSubject,
    actionId: string,
    details: Readonly<Record<string, string>>,
    flags: number,
    cancellationId: string,
  ): Promise<PolkitCheckResult>;
  /** `CancelCheckAuthorization(cancellation_id)`: takes the agent's dialog down. */
  cancelCheckAuthorization(cancellationId: string): Promise<void>;
  /** `EnumerateActions(locale)`: every installed action. */
  enumerateActions(locale: string): Promise<PolkitActionDescription[]>;
  /** True once the connection ended (closed here, or lost). */
  readonly closed: boolean;
  /** Ends the connection; pending calls reject with `disconnected`. Idempotent. */
  close(): void;
}

/** Options for {@link PolkitBinding.connect}. */
export interface PolkitConnectOptions {
  /** D-Bus address of the system bus (`unix:path=/run/dbus/system_bus_socket`). */
  readonly address: string;
  /** Bounds the connection and its handshake; on abort the attempt rejects as `unreachable`. */
  readonly signal?: AbortSignal;
}

/** Opens connections to polkit. The real one is `dbusPolkitBinding`; tests pass fakes. */
export interface PolkitBinding {
  /** Connects to the bus and says hello. Rejects with a {@link PolkitBusError} (`unreachable`). */
  connect(options: PolkitConnectOptions): Promise<PolkitAuthority>;
}

type DBusModule = typeof import('@jellybrick/dbus-next');
type MessageBus = import('@jellybrick/dbus-next').MessageBus;
type DBusMessage = import('@jellybrick/dbus-next').Message;

const loadDBus: () => Promise<DBusModule> = loadOnce(() => import('@jellybrick/dbus-next'));

/** The internals of the client we rely on; checked at run time, since they are not public API. */
interface ConnectionInternals {
  on(event: 'end', listener: () => void): unknown;
  off(event: 'end', listener: () => void): unknown;
  stream?: Socket;
}

function internalsOf(bus: MessageBus): ConnectionInternals | undefined {
  const connection = (bus as unknown as { _connection?: unknown })._connection;
  if (
    typeof connection === 'object' &&
    connection !== null &&
    typeof (connection as { on?: unknown }).on === 'function' &&
    typeof (connection as { off?: unknown }).off === 'function'
  ) {
    return connection as ConnectionInternals;
  }
  return undefined;
}

class DBusPolkitAuthority implements PolkitAuthority {
  readonly #dbus: DBusModule;
  readonly #bus: MessageBus;
  readonly #pending = new Set<(error: PolkitBusError) => void>();
  #closed = false;

  constructor(dbus: DBusModule, bus: MessageBus) {
    this.#dbus = dbus;
    this.#bus = bus;
    errorsOf(bus).on('error', (error: unknown) => this.#end(error));
    internalsOf(bus)?.on('end', () => this.#end(undefined));
    this.#updateRef();
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#end(undefined);
  }

  async checkAuthorization(
    subject: PolkitSubject,
    actionId: string,
    details: Readonly<Record<string, string>>,
    flags: number,
    cancellationId: string,
  ): Promise<PolkitCheckResult> {
    const { Variant } = this.#dbus;
    const reply = await this.#call('CheckAuthorization', '(sa{sv})sa{ss}us', [
      [
        'unix-process',
        {
          pid: new Variant('u', subject.pid),
          'start-time': new Variant('t', subject.startTime),
          uid: new Variant('i', subject.uid),
        },
      ],
      actionId,
      { ...details },
      flags,
      cancellationId,
    ]);
    const result = reply.body[0];
    if (
      !Array.isArray(result) ||
      typeof result[0] !== 'boolean' ||
      typeof result[1] !== 'boolean' ||
      !isStringRecord(result[2])
    ) {
      // Fail closed: a reply we cannot read is never taken for a grant.
      throw new PolkitBusError('malformed', 'CheckAuthorization returned a malformed result.');
    }
    return { isAuthorized: result[0], isChallenge: result[1], details: result[2] };
  }

  async cancelCheckAuthorization(cancellationId: string): Promise<void> {
    await this.#call('CancelCheckAuthorization', 's', [cancellationId]);
  }

  async enumerateActions(locale: string): Promise<PolkitActionDescription[]> {
    const reply = await this.#call('EnumerateActions', 's', [locale]);
    const list = reply.body[0];
    if (!Array.isArray(list)) {
      throw new PolkitBusError('malformed', 'EnumerateActions returned a malformed result.');
    }
    return list.flatMap((entry): PolkitActionDescription[] => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string') return [];
      return [
        {
          actionId: entry[0],
          description: typeof entry[1] === 'string' ? entry[1] : '',
          message: typeof entry[2] === 'string' ? entry[2] : '',
          vendorName: typeof entry[3] === 'string' ? entry[3] : '',
          annotations: isStringRecord(entry[9]) ? entry[9] : {},
        },
      ];
    });
  }

  #call(member: string, signature: string, body: unknown[]): Promise<DBusMessage> {
    if (this.#closed) {
      return Promise.reject(
        new PolkitBusError('disconnected', `The system bus connection is closed (${member}).`),
      );
    }
    const message = new this.#dbus.Message({
      destination: POLKIT_NAME,
      path: AUTHORITY_PATH,
      interface: AUTHORITY_INTERFACE,
      member,
      signature,
      body,
    });
    return new Promise<DBusMessage>((resolve, reject) => {
      const abandon = (error: PolkitBusError): void => {
        this.#pending.delete(abandon);
        this.#updateRef();
        reject(error);
      };
      this.#pending.add(abandon);
      this.#updateRef();
      let call: Promise<DBusMessage | null>;
      try {
        call = this.#bus.call(message);
      } catch (error) {
        abandon(new PolkitBusError('malformed', `${member}: ${describe(error)}`, { cause: error }));
        return;
      }
      call.then(
        (reply) => {
          if (!this.#pending.delete(abandon)) return;
          this.#updateRef();
          if (reply === null) {
            reject(new PolkitBusError('malformed', `${member} returned no reply.`));
          } else {
            resolve(reply);
          }
        },
        (error: unknown) => {
          if (!this.#pending.delete(abandon)) return;
          this.#updateRef();
          reject(toBusError(error, member));
        },
      );
    });
  }

  #end(error: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    debug('system bus connection ended%s', error === undefined ? '' : `: ${describe(error)}`);
    const lost = new PolkitBusError(
      'disconnected',
      `The system bus connection ended before polkit answered${error === undefined ? '' : ` (${describe(error)})`}.`,
      error === undefined ? {} : { cause: error },
    );
    for (const abandon of [...this.#pending]) abandon(lost);
    try {
      this.#bus.disconnect();
    } catch {
      // Already gone.
    }
  }

  /** Keeps the process alive only while a call waits for polkit. */
  #updateRef(): void {
    const stream = internalsOf(this.#bus)?.stream;
    if (stream === undefined || typeof stream.ref !== 'function') return;
    if (this.#pending.size > 0 && !this.#closed) stream.ref();
    else stream.unref();
  }
}

/**
 * The bus emits 'error' (for connection failures) although its typed event map does not list
 * it; without a listener, Node would throw it as an uncaught exception.
 */
function errorsOf(bus: MessageBus): EventEmitter {
  return bus as unknown as EventEmitter;
}

function isStringRecord(value: unknown): value is Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((entry) => typeof entry === 'string');
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

function toBusError(error: unknown, member: string): PolkitBusError {
  if (error instanceof PolkitBusError) return error;
  const type = (error as { type?: unknown } | undefined)?.type;
  if (typeof type === 'string') {
    const text = (error as { text?: unknown }).text;
    return new PolkitBusError('reply', `${member}: ${type}: ${String(text ?? '')}`, {
      dbusName: type,
      cause: error,
    });
  }
  return new PolkitBusError('malformed', `${member}: ${describe(error)}`, { cause: error });
}

/**
 * The real binding: connects to the system bus with `@jellybrick/dbus-next` (loaded on first
 * use) and talks to polkitd.
 *
 * @example
 * ```ts
 * const authority = await dbusPolkitBinding.connect({
 *   address: DEFAULT_SYSTEM_BUS_ADDRESS,
 *   signal: AbortSignal.timeout(2_000),
 * });
 * const actions = await authority.enumerateActions('');
 * authority.close();
 * ```
 */
export const dbusPolkitBinding: PolkitBinding = {
  async connect(options: PolkitConnectOptions): Promise<PolkitAuthority> {
    const { address, signal } = options;
    if (signal?.aborted) {
      throw new PolkitBusError('unreachable', `Connecting to ${address} was aborted.`, {
        cause: signal.reason,
      });
    }
    const dbus = await loadDBus();
    // sessionBus() is the client's plain "connect to this address" (systemBus() ignores the
    // address option and reads only the environment). EXTERNAL is the only mechanism the system
    // bus accepts: the bus reads our uid from the socket.
    const bus = dbus.sessionBus({ busAddress: address, authMethods: ['EXTERNAL'] });
    return new Promise<PolkitAuthority>((resolve, reject) => {
      const fail = (error: PolkitBusError): void => {
        cleanup();
        try {
          bus.disconnect();
        } catch {
          // Never connected.
        }
        reject(error);
      };
      const onError = (error: unknown): void => {
        fail(
          new PolkitBusError(
            'unreachable',
            `Cannot connect to the system bus at ${address}: ${describe(error)}`,
            { cause: error },
          ),
        );
      };
      const onEnd = (): void => {
        fail(
          new PolkitBusError(
            'unreachable',
            `The system bus at ${address} closed the connection during the handshake.`,
          ),
        );
      };
      const onAbort = (): void => {
        fail(
          new PolkitBusError(
            'unreachable',
            `Connecting to the system bus at ${address} timed out.`,
            {
              cause: signal?.reason,
            },
          ),
        );
      };
      const onConnect = (): void => {
        cleanup();
        debug('connected to the system bus at %s as %s', address, bus.name);
        resolve(new DBusPolkitAuthority(dbus, bus));
      };
      const internals = internalsOf(bus);
      const cleanup = (): void => {
        bus.off('connect', onConnect);
        errorsOf(bus).off('error', onError);
        internals?.off('end', onEnd);
        signal?.removeEventListener('abort', onAbort);
        // An error after we gave up must not become an unhandled 'error' event.
        errorsOf(bus).on('error', ignore);
      };
      bus.once('connect', onConnect);
      errorsOf(bus).on('error', onError);
      internals?.on('end', onEnd);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  },
};

function ignore(): void {}
