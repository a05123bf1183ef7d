/**
 * What of the Windows bindings runs off Windows: the load refusal and the error type. The real
 * calls are exercised under Wine by test/win32/*.test.cjs (test/win32/run-under-wine.sh).
 */
import { PlatformError } from 'bridgekeeper';
import { describe, expect, it } from 'vitest';
import {
  HRESULTS,
  loadWin32Bindings,
  WIN32_ERRORS,
  Win32Error,
} from '../../src/platform/win32/bindings.js';

describe('Windows bindings', () => {
  it.skipIf(process.platform === 'win32')(
    'refuse to load off Windows with ERR_UNSUPPORTED_PLATFORM (not on Windows)',
    async () => {
      await expect(loadWin32Bindings()).rejects.toMatchObject({
        code: 'ERR_UNSUPPORTED_PLATFORM',
        message: expect.stringContaining(`this is ${process.platform}-${process.arch}`),
      });
      // A failed load is not cached as a success: the next call tries (and fails) again.
      await expect(loadWin32Bindings()).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_PLATFORM' });
    },
  );

  it('Win32Error is an ERR_PLATFORM PlatformError with the call and the unsigned code', () => {
    const hresult = new Win32Error('RoGetActivationFactory', HRESULTS.classNotRegistered);
    expect(hresult).toBeInstanceOf(PlatformError);
    expect(hresult).toMatchObject({
      name: 'Win32Error',
      code: 'ERR_PLATFORM',
      call: 'RoGetActivationFactory',
      winerror: 0x80040154,
    });
    expect(hresult.message).toContain('0x80040154');
    const error = new Win32Error('CreateFileW', WIN32_ERRORS.pipeBusy, 'Every instance is taken.');
    expect(error).toMatchObject({ winerror: 231, message: 'Every instance is taken.' });
  });
});
