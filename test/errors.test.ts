import {
  AuthorizationError,
  BridgekeeperError,
  ERROR_CODES,
  HandlerError,
  PeerError,
  PlatformError,
  ProtocolError,
  RemoteError,
  TransportError,
} from 'bridgekeeper';
import { describe, expect, it } from 'vitest';
import { createError } from '../src/errors.js';
import { fromWireError, toWireError } from '../src/protocol/messages.js';

const classes = {
  BridgekeeperError,
  TransportError,
  ProtocolError,
  PeerError,
  AuthorizationError,
  PlatformError,
};

describe('errors', () => {
  it.each(Object.entries(ERROR_CODES))('%s is built as a %s', (code, className) => {
    const error = createError(code as keyof typeof ERROR_CODES, 'message');
    expect(error).toBeInstanceOf(classes[className as keyof typeof classes]);
    expect(error).toBeInstanceOf(BridgekeeperError);
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe(code);
    expect(error.name).toBe(className);
  });

  it('instanceof works across copies of the package (Symbol.for branding)', () => {
    // A second copy's class has a different identity but the same brand.
    class OtherCopy extends Error {
      readonly code = 'ERR_TIMEOUT';
    }
    const foreign = new OtherCopy('x');
    Object.defineProperty(foreign, Symbol.for('bridgekeeper.error.classes'), {
      value: ['BridgekeeperError', 'TransportError'],
    });
    expect(foreign).toBeInstanceOf(BridgekeeperError);
    expect(foreign).toBeInstanceOf(TransportError);
    expect(foreign).not.toBeInstanceOf(PeerError);
    expect(new Error('plain')).not.toBeInstanceOf(BridgekeeperError);
    expect(new PeerError('ERR_PEER_CHANGED', 'x')).not.toBeInstanceOf(TransportError);
  });

  it('keeps the cause', () => {
    const cause = Object.assign(new Error('EACCES'), { errno: -13 });
    expect(createError('ERR_PLATFORM', 'x', { cause }).cause).toBe(cause);
  });

  it('round-trips every code over the wire to the same class', () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      const back = fromWireError(toWireError(createError(code, `msg ${code}`)), 'm');
      expect(back.code).toBe(code);
      expect(back.constructor.name).toBe(ERROR_CODES[code]);
    }
  });

  it('sends HandlerErrors with their app code and data, and hides other errors', () => {
    const wire = toWireError(
      new HandlerError('ITEM_NOT_FOUND', 'No such item.', { data: { item: 'x' } }),
    );
    expect(wire).toEqual({
      code: -32000,
      message: 'No such item.',
      data: { code: 'ITEM_NOT_FOUND', data: { item: 'x' } },
    });
    const back = fromWireError(wire, 'm');
    expect(back).toBeInstanceOf(RemoteError);
    expect(back).toMatchObject({ code: 'ITEM_NOT_FOUND', data: { item: 'x' } });
    const hidden = toWireError(new Error('secret detail'));
    expect(hidden.data?.code).toBe('ERR_INTERNAL');
    expect(hidden.message).not.toContain('secret');
  });

  it('carries retryAfterMs for the cool-down', () => {
    const wire = toWireError(
      new AuthorizationError('ERR_AUTHORIZATION_COOLDOWN', 'wait', { retryAfterMs: 1234 }),
    );
    expect(wire.code).toBe(-32001);
    const back = fromWireError(wire, 'm') as AuthorizationError;
    expect(back.retryAfterMs).toBe(1234);
  });
});
