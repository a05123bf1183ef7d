/** Assertions shared by the test files. */

import { expect } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';

/** Awaits a promise that must reject with a BridgekeeperError, and returns that error. */
export async function rejectionOf(promise: Promise<unknown>): Promise<BridgekeeperError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(BridgekeeperError);
    return error as BridgekeeperError;
  }
  throw new Error('expected a rejection');
}
