/**
 * Shared by the prompt backends: text a person reads in an OS dialog, waiting on a native
 * operation that an AbortSignal may end, and `isAvailable` from a diagnosis.
 *
 * @module
 * @internal
 */

import { createError } from '../errors.js';

/** Marks and embeddings/isolates that reorder text: U+200E/F, U+202A–U+202E, U+2066–U+2069. */
const BIDI_CONTROLS: ReadonlySet<number> = new Set([
  0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069,
]);

/**
 * One line of plain text: no control characters (a newline could fake lines in the dialog), no
 * bidirectional overrides (they can reorder what the person reads), at most `max` characters
 * (an ellipsis marks a cut).
 */
export function cleanPromptText(value: string, max: number): string {
  let text = '';
  for (const char of String(value)) {
    const code = char.codePointAt(0) ?? 0;
    if (BIDI_CONTROLS.has(code)) continue;
    const control =
      code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028 || code === 0x2029;
    text += control ? ' ' : char;
  }
  const chars = [...text.replace(/\s+/g, ' ').trim()];
  return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : chars.join('');
}

/**
 * "program in host" (`node in GNOME Terminal`), or whichever of the two is known, or '' — from
 * the verified process description only, each part cleaned and at most `partMax` characters.
 */
export function processForPrompt(
  process: { readonly host?: string; readonly program?: string } | undefined,
  partMax: number,
): string {
  const host = cleanPromptText(process?.host ?? '', partMax);
  const program = cleanPromptText(process?.program ?? '', partMax);
  if (program !== '' && host !== '' && program !== host) return `${program} in ${host}`;
  return host || program;
}

/**
 * An app-supplied text for a dialog (`message(request)`, `reason(request)`), cleaned and bounded;
 * '' when it is empty, so the caller uses its default (an empty dialog asks the person to agree
 * to nothing in particular).
 *
 * @throws `ERR_INVALID_ARGUMENT` naming `what` when it is not a string.
 */
export function customPromptText(text: unknown, max: number, what: string): string {
  if (typeof text !== 'string') {
    throw createError('ERR_INVALID_ARGUMENT', `${what} must return a string.`);
  }
  return cleanPromptText(text, max);
}

/** What {@link untilAborted} rejects with when the signal fires first. */
export const ABORTED: unique symbol = Symbol('aborted');

/** Resolves like `promise`, or rejects with {@link ABORTED} as soon as `signal` fires. */
export async function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) throw ABORTED;
  let onAbort: () => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(ABORTED);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * A backend's `isAvailable`: whether `diagnose()` says it can prompt; an error is logged through
 * `log` and counts as unavailable (never throws).
 */
export async function availableFrom(
  diagnose: () => Promise<{ readonly available: boolean }>,
  log: (format: string, ...args: unknown[]) => void,
): Promise<boolean> {
  try {
    return (await diagnose()).available;
  } catch (error) {
    log('isAvailable: %O', error);
    return false;
  }
}
