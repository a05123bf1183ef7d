/**
 * One shared promise for something loaded on first use (native bindings, a platform module, a
 * D-Bus library): every caller gets the same attempt while it runs or once it succeeded, and a
 * failed attempt is forgotten, so the next call tries again instead of remembering the error.
 *
 * @module
 * @internal
 */

/** Wraps `load` so it runs at most once at a time and once for good; see the module comment. */
export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    if (loading === undefined) {
      let attempt: Promise<T>;
      try {
        attempt = load();
      } catch (error) {
        return Promise.reject(error);
      }
      loading = attempt;
      attempt.catch(() => {
        if (loading === attempt) loading = undefined;
      });
    }
    return loading;
  };
}
