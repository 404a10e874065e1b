/**
 * A promise whose resolving functions are read from `captured` right after `newPromise()` returns,
 * instead of an executor closure made for every promise: for the hot paths that make one promise
 * per message (a webhook delivery, an MQTT publish). The executor runs synchronously inside the
 * Promise constructor, so `captured` holds this promise's functions until the next `newPromise()`.
 */
export const captured: { resolve: (value: unknown) => void; reject: (err: unknown) => void } = { resolve: () => undefined, reject: () => undefined };

function capture(resolve: (value: unknown) => void, reject: (err: unknown) => void): void {
  captured.resolve = resolve;
  captured.reject = reject;
}

/** A new pending promise; its resolving functions are in `captured` (read them at once). */
export function newPromise<T>(): Promise<T> {
  return new Promise<T>(capture as (resolve: (value: T) => void, reject: (err: unknown) => void) => void);
}
