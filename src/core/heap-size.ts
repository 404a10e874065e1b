import { ORIGINAL, type Message } from './message.js';

/**
 * What a parsed value costs in the heap, estimated: body bytes are not enough (a 1 MiB body of
 * `[{},{},…]` is ~350 000 objects, ~25 MB of heap). V8 spends about this much on an empty
 * object or array with its slot in the parent; strings take two bytes a character at most.
 */
export const CONTAINER_BYTES = 72;
export const SCALAR_BYTES = 16;

/** The estimated heap size of a message (value, key and headers); iterative, so deep values cannot overflow the stack. */
export function approxMessageBytes(msg: Message): number {
  let total = approxValueBytes(msg.value) + approxValueBytes(msg.key);
  const headers = msg.headers;
  for (const k in headers) total += 2 * (k.length + headers[k]!.length) + SCALAR_BYTES;
  // A consumed record's bytes, kept for byte-exact copies (its decoded fields are the ones counted above).
  const original = msg[ORIGINAL];
  if (original) {
    total += (original.value?.length ?? 0) + (original.key?.length ?? 0) + CONTAINER_BYTES;
    for (const v of Object.values(original.headers))
      total += Array.isArray(v) ? v.reduce((n: number, b: Buffer | null) => n + (b?.length ?? 0) + SCALAR_BYTES, 0) : ((v as Buffer | null)?.length ?? 0) + SCALAR_BYTES;
  }
  return total;
}

export function approxValueBytes(value: unknown): number {
  // Scalars (keys, most headers-only messages) need no walk.
  if (value === null || typeof value !== 'object') return scalarBytes(value);
  // Scalars inside are counted where they are found and only containers go on the stack, which is
  // made only for a value that has nested ones: a flat object (most messages) allocates nothing.
  // for…in walks the keys without an array of them; the objects JSON.parse and the expression
  // fast path make have fast properties, for which V8 enumerates from a cache
  // (docs/performance.md: 0.09 → 0.02 µs for a flat four-field value).
  let total = 0;
  let stack: object[] | undefined;
  let v: object = value;
  for (;;) {
    if (Buffer.isBuffer(v)) total += v.length + CONTAINER_BYTES;
    else {
      total += CONTAINER_BYTES;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const x: unknown = v[i];
          if (x !== null && typeof x === 'object') (stack ??= []).push(x);
          else total += scalarBytes(x);
        }
      } else {
        const o = v as Record<string, unknown>;
        for (const k in o) {
          const x = o[k];
          total += 2 * k.length;
          if (x !== null && typeof x === 'object') (stack ??= []).push(x);
          else total += scalarBytes(x);
        }
      }
    }
    if (stack === undefined || stack.length === 0) return total;
    v = stack.pop()!;
  }
}

function scalarBytes(x: unknown): number {
  return typeof x === 'string' ? 2 * x.length + SCALAR_BYTES : SCALAR_BYTES;
}

/** A size for a detail: in MiB, or in KiB below one MiB, so a small limit does not read as "0.0 MiB". */
export function sizeText(bytes: number): string {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
