import { describe, expect, it } from 'vitest';
import { PlatformError } from '../../../src/errors.js';
import {
  createDarwinBindings,
  DARWIN_DECLARATIONS,
  type DarwinNative,
  loadDarwinBindings,
} from '../../../src/platform/darwin/bindings.js';
import { createDarwinPlatform } from '../../../src/platform/darwin/index.js';
import { auditToken, encodeKinfo, FakeDarwinBindings, PATHS } from './fake-darwin.js';
import { FakeObjC } from './fake-objc.js';

describe('createDarwinPlatform', () => {
  it('wires identity, credentials, verification and release to the bindings', async () => {
    const fake = new FakeDarwinBindings();
    fake.spawn({ pid: 50, path: PATHS.terminal });
    fake.spawn({ pid: 100, parent: 50, path: PATHS.login, setsid: true, tty: 0x1000003 });
    fake.spawn({ pid: 101, parent: 100, path: PATHS.zsh });
    fake.spawn({ pid: 200, parent: 101, path: PATHS.cli });
    fake.connect(4, 200);
    const platform = await createDarwinPlatform({ bindings: fake });
    expect(platform.id).toBe('darwin');
    expect(platform.defaultEndpoint).toBeUndefined();
    expect(Object.isFrozen(platform)).toBe(true);

    const peer = platform.identifySocketPeer(4);
    expect(peer).toMatchObject({ pid: 200, source: 'local_peerpid', executable: PATHS.cli });
    const credential = await platform.credentials.derive(peer);
    expect(credential).toMatchObject({ scope: 'terminal', process: { host: 'Terminal' } });
    await expect(platform.verifyPeer(peer)).resolves.toBeUndefined();
    fake.exit(200);
    await expect(platform.verifyPeer(peer)).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
    platform.releasePeer(peer);
  });

  it.skipIf(process.platform === 'darwin')(
    'rejects with ERR_UNSUPPORTED_PLATFORM when the native bindings cannot load (not macOS)',
    async () => {
      await expect(loadDarwinBindings()).rejects.toMatchObject({
        code: 'ERR_UNSUPPORTED_PLATFORM',
      });
      await expect(createDarwinPlatform()).rejects.toMatchObject({
        code: 'ERR_UNSUPPORTED_PLATFORM',
      });
    },
  );
});

/** A fake libSystem / CoreFoundation / Security behind DarwinNative, recording calls. */
function fakeNative() {
  const calls: string[] = [];
  const released: bigint[] = [];
  let next = 0x1000n;
  const alloc = () => {
    next += 0x10n;
    return next;
  };
  let errno = 0;
  const state = {
    peerPid: 321,
    token: auditToken(321),
    tokenLength: 32,
    kinfo: encodeKinfo({ pid: 321, startSeconds: 1_760_000_001n, startMicros: 5 }) as Buffer | null,
    sid: 300 as number,
    path: PATHS.cli as string | null,
    boot: 'ABCD-1234' as string | null,
    guest: 0,
    requirement: 0,
    validity: 0,
    texts: [] as string[],
  };
  const native: DarwinNative = {
    getsockopt(_fd, level, name, value, length) {
      calls.push(`getsockopt ${level} ${name} ${length.readUInt32LE(0)}`);
      if (name === 2) value.writeInt32LE(state.peerPid, 0);
      else if (name === 6) {
        state.token.copy(value);
        length.writeUInt32LE(state.tokenLength, 0);
      } else {
        errno = 42;
        return -1;
      }
      return 0;
    },
    sysctl(name, count, old, oldLength) {
      calls.push(`sysctl ${[0, 4, 8, 12].map((o) => name.readInt32LE(o)).join(',')} ${count}`);
      if (state.kinfo === null) {
        oldLength.writeBigUInt64LE(0n, 0);
        return 0;
      }
      state.kinfo.copy(old);
      oldLength.writeBigUInt64LE(BigInt(state.kinfo.length), 0);
      return 0;
    },
    sysctlbyname(name, old, oldLength) {
      calls.push(`sysctlbyname ${name}`);
      if (state.boot === null) {
        errno = 2;
        return -1;
      }
      const bytes = Buffer.from(`${state.boot}\0`);
      bytes.copy(old);
      oldLength.writeBigUInt64LE(BigInt(bytes.length), 0);
      return 0;
    },
    getsid(pid) {
      if (state.sid < 0) errno = -state.sid;
      return state.sid < 0 ? -1 : pid === 321 ? state.sid : -1;
    },
    proc_pidpath(_pid, buffer) {
      if (state.path === null) {
        errno = 3;
        return 0;
      }
      return buffer.write(state.path);
    },
    errno: () => errno,
    CFDataCreate(_a, bytes, length) {
      calls.push(`CFDataCreate ${bytes.subarray(0, length).toString('hex')}`);
      return alloc();
    },
    CFStringCreateWithCString(_a, text, encoding) {
      state.texts.push(text);
      calls.push(`CFStringCreateWithCString ${encoding.toString(16)}`);
      return alloc();
    },
    CFDictionaryCreate(_a, keys, values, count, keyCallBacks, valueCallBacks) {
      calls.push(
        `CFDictionaryCreate ${keys.readBigUInt64LE(0)} ${values.readBigUInt64LE(0)} ${count} ${keyCallBacks} ${valueCallBacks}`,
      );
      return alloc();
    },
    CFRelease(object) {
      released.push(object);
    },
    SecCodeCopyGuestWithAttributes(_h, attributes, _flags, guest) {
      calls.push(`SecCodeCopyGuestWithAttributes ${attributes}`);
      if (state.guest !== 0) return state.guest;
      guest.writeBigUInt64LE(alloc(), 0);
      return 0;
    },
    SecRequirementCreateWithString(text, _flags, requirement) {
      calls.push(`SecRequirementCreateWithString ${text}`);
      if (state.requirement !== 0) return state.requirement;
      requirement.writeBigUInt64LE(alloc(), 0);
      return 0;
    },
    SecCodeCheckValidity(code, _flags, requirement) {
      calls.push(`SecCodeCheckValidity ${code} ${requirement}`);
      return state.validity;
    },
    guestAttributeAudit: 0xa0d17n,
    dictionaryKeyCallBacks: 0xcb1n,
    dictionaryValueCallBacks: 0xcb2n,
  };
  return { native, calls, released, state, allocated: () => next };
}

describe('createDarwinBindings over a fake libSystem', () => {
  it('reads LOCAL_PEERPID and LOCAL_PEERTOKEN at SOL_LOCAL', () => {
    const { native, calls, state } = fakeNative();
    const bindings = createDarwinBindings(native);
    expect(bindings.getPeerPid(9)).toBe(321);
    expect(bindings.getPeerToken(9)).toEqual(auditToken(321));
    expect(calls).toEqual(['getsockopt 0 2 4', 'getsockopt 0 6 32']);
    state.tokenLength = 24;
    expect(() => bindings.getPeerToken(9)).toThrow(
      expect.objectContaining({ code: 'ERR_PLATFORM' }),
    );
  });

  it('reads kinfo_proc through sysctl {CTL_KERN, KERN_PROC, KERN_PROC_PID, pid}', () => {
    const { native, calls, state } = fakeNative();
    const bindings = createDarwinBindings(native);
    expect(bindings.kinfo(321)).toMatchObject({ pid: 321, startTime: '1760000001000005' });
    expect(calls).toEqual(['sysctl 1,14,1,321 4']);
    state.kinfo = null;
    expect(bindings.kinfo(321)).toBeUndefined();
    state.kinfo = Buffer.alloc(100);
    expect(() => bindings.kinfo(321)).toThrow(expect.objectContaining({ code: 'ERR_PLATFORM' }));
  });

  it('reads getsid, proc_pidpath and kern.bootsessionuuid, with undefined for "none"', () => {
    const { native, state } = fakeNative();
    const bindings = createDarwinBindings(native);
    expect(bindings.sessionId(321)).toBe(300);
    state.sid = -3; // ESRCH
    expect(bindings.sessionId(321)).toBeUndefined();
    state.sid = -1; // EPERM
    expect(() => bindings.sessionId(321)).toThrow(
      expect.objectContaining({ code: 'ERR_PLATFORM' }),
    );
    expect(bindings.executablePath(321)).toBe(PATHS.cli);
    state.path = null;
    expect(bindings.executablePath(321)).toBeUndefined();
    expect(bindings.bootSessionUuid()).toBe('ABCD-1234');
    state.boot = null;
    expect(bindings.bootSessionUuid()).toBeUndefined();
  });

  it('checks a requirement against the audit token and releases every object', () => {
    const { native, calls, released, state } = fakeNative();
    const bindings = createDarwinBindings(native);
    const token = auditToken(321);
    expect(bindings.checkCodeRequirement(token, 'anchor apple generic')).toEqual({
      ok: true,
      status: 0,
    });
    expect(calls[0]).toBe(`CFDataCreate ${token.toString('hex')}`);
    expect(calls[1]).toMatch(
      new RegExp(`^CFDictionaryCreate ${0xa0d17n} \\d+ 1 ${0xcb1n} ${0xcb2n}$`),
    );
    expect(calls.at(-1)).toMatch(/^SecCodeCheckValidity /);
    expect(state.texts).toEqual(['anchor apple generic']);
    // data, dictionary, code, string, requirement: five objects, released once each.
    expect(released).toHaveLength(5);
    expect(new Set(released).size).toBe(5);

    for (const [field, status] of [
      ['validity', -67050],
      ['requirement', -67052],
      ['guest', -67065],
    ] as const) {
      const fresh = fakeNative();
      fresh.state[field] = status;
      const result = createDarwinBindings(fresh.native).checkCodeRequirement(token, 'anchor apple');
      expect(result).toEqual({ ok: false, status });
      // Everything created before the failure is released; nothing twice.
      const created = fresh.calls.filter((c) => /^CF(Data|String|Dictionary)Create/.test(c)).length;
      const copied = fresh.calls.filter((c) => /^Sec(CodeCopy|RequirementCreate)/.test(c)).length;
      const copiedOk = field === 'guest' ? 0 : field === 'requirement' ? 1 : 2;
      expect(fresh.released).toHaveLength(created + Math.min(copied, copiedOk));
    }
  });

  it('refuses a bad token or requirement before calling Security.framework', () => {
    const { native, calls } = fakeNative();
    const bindings = createDarwinBindings(native);
    expect(() => bindings.checkCodeRequirement(Buffer.alloc(8), 'anchor apple')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => bindings.checkCodeRequirement(auditToken(1), ' ')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => bindings.checkCodeRequirement(auditToken(1), 'a\0b')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(calls).toEqual([]);
  });

  it('fails LocalAuthentication with ERR_UNSUPPORTED_PLATFORM when made without it', async () => {
    const bindings = createDarwinBindings(fakeNative().native);
    expect(() => bindings.localAuthentication.canEvaluatePolicy(2)).toThrow(
      expect.objectContaining({ code: 'ERR_UNSUPPORTED_PLATFORM' }),
    );
    await expect(
      bindings.localAuthentication.evaluatePolicy(2, 'why', {
        signal: new AbortController().signal,
      }),
    ).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_PLATFORM' });
  });

  it('binds LocalAuthentication on first use only, once, and again after a failed attempt', async () => {
    let attempts = 0;
    const la = {
      canEvaluatePolicy: () => ({ ok: true }) as const,
      evaluatePolicy: async () => ({ ok: false, code: -2 }) as const,
    };
    const bindings = createDarwinBindings(fakeNative().native, {
      localAuthentication: () => {
        attempts++;
        if (attempts === 1) {
          throw new PlatformError('ERR_UNSUPPORTED_PLATFORM', 'framework missing');
        }
        return la;
      },
    });
    expect(attempts).toBe(0);
    expect(() => bindings.localAuthentication.canEvaluatePolicy(2)).toThrow('framework missing');
    expect(bindings.localAuthentication.canEvaluatePolicy(4)).toEqual({ ok: true });
    await expect(
      bindings.localAuthentication.evaluatePolicy(2, 'why', {
        signal: new AbortController().signal,
      }),
    ).resolves.toEqual({ ok: false, code: -2 });
    expect(attempts).toBe(2);
  });
});

describe('DARWIN_DECLARATIONS', () => {
  const koffi = (async () =>
    ((await import('koffi')) as unknown as { default: { proto(definition: string): unknown } })
      .default)();
  const entries = Object.entries(DARWIN_DECLARATIONS).flatMap(([library, { functions }]) =>
    Object.entries(functions).map(([key, definition]) => ({ library, key, definition })),
  );

  it('every C prototype parses with koffi (the same parser that binds them on a Mac)', async () => {
    const { proto } = await koffi;
    expect(entries.length).toBeGreaterThan(20);
    for (const { library, key, definition } of entries) {
      // Anonymous: koffi's named prototypes are process-wide, and objc_msgSend has several.
      const anonymous = definition.replace(/^(.*?)([A-Za-z_]\w*)\s*\(/, '$1(');
      expect(() => proto(anonymous), `${library}.${key}: ${definition}`).not.toThrow();
    }
  });

  it('declares exactly the functions the typed native interfaces have, under their C names', () => {
    const symbol = (definition: string) => /([A-Za-z_]\w*)\s*\(/.exec(definition)?.[1];
    const native = Object.keys(fakeNative().native).filter(
      (key) =>
        typeof (fakeNative().native as unknown as Record<string, unknown>)[key] === 'function',
    );
    const c = ['libSystem', 'coreFoundation', 'security'] as const;
    const declared = c.flatMap((library) => Object.keys(DARWIN_DECLARATIONS[library].functions));
    expect([...declared, 'errno'].sort()).toEqual(native.sort());
    for (const library of c) {
      for (const [key, definition] of Object.entries(DARWIN_DECLARATIONS[library].functions)) {
        expect(symbol(definition), key).toBe(key);
      }
    }
    const objcMethods = Object.getOwnPropertyNames(FakeObjC.prototype).filter(
      (name) => name !== 'constructor' && /^(objc_|sel_|send)/.test(name),
    );
    expect(Object.keys(DARWIN_DECLARATIONS.objc.functions).sort()).toEqual(objcMethods.sort());
    for (const [key, definition] of Object.entries(DARWIN_DECLARATIONS.objc.functions)) {
      expect(symbol(definition), key).toBe(key.startsWith('send') ? 'objc_msgSend' : key);
    }
  });
});
