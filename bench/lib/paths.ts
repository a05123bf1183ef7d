/**
 * Where things are, for the runner (fixtures are bundled elsewhere and must not use this).
 *
 * @module
 */

import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The fixtures' sources. */
export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
