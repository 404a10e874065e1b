import { createRequire } from 'node:module';

/**
 * A kind's runtime module, loaded the first time a config uses the kind: a gateway without it pays
 * neither its memory nor its start-up time (docs/performance.md). Loaded synchronously (require of
 * an ES module, Node >= 20.19) because a kind's create() is synchronous. `from` is the caller's
 * import.meta.url, `path` relative to it.
 */
export function whenUsed<T>(from: string, path: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= createRequire(from)(path) as T);
}
