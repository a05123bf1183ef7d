/**
 * The one shape check of a code-signing requirement's text shared by the macOS code (the policy,
 * the Security.framework and libxpc bindings, the XPC transport): each says in its own words
 * what to write instead.
 *
 * @module
 * @internal
 */

/** Whether `value` can be a code-signing requirement: a non-blank string without NUL. */
export function isCodeRequirementText(value: unknown): value is string {
  return typeof value === 'string' && value.trim() !== '' && !value.includes('\0');
}
