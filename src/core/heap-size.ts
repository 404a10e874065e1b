import { ORIGINAL, type Message } from './message.js';

/**
 * What a parsed value costs in the heap, estimated: body bytes are not enough (a 1 MiB body of
 * `[{},{},…]` is ~350 000 objects, ~25 MB of heap). V8 spends about this much on an empty
 * object or array with its slot in the parent; strings take two bytes a character at most.
 */
export const CONTAINER_BYTES = 72;
const SCALAR_BYTES = 16;

/** The estimated heap size of a message (value, key and headers); iterative, so deep values cannot overflow the stack. */
export function approxMessageBytes(msg: Message): number {
  let total = approxValueBytes(msg.value) + approxValueBytes(msg.key);
  const headers = msg.headers;
  for (const k in headers) total += 2 * (k.length + headers[k]!.length) + SCALAR_BYTES;
  // A consumed record's bytes, kept for byte-exact copies (its decoded fields are the ones counted above).
  const original = msg[ORIGINAL];
  if (original) {
    total += (original.value?.length ?? 0) + (original.key?.length ?? 0) + CONTAINER_BYTES;
    for (const v of Object.values(original.headers)) total += Buffer.isBuffer(v) ? v.length + SCALAR_BYTES : v.reduce((n, b) => n + b.length + SCALAR_BYTES, 0);
  }
  return total;
}

export function approxValueBytes(value: unknown): number {
  // Scalars (keys, most headers-only messages) need no walk.
  if (value === null || typeof value !== 'object') return typeof value === 'string' ? 2 * value.length + SCALAR_BYTES : SCALAR_BYTES;
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') total += 2 * v.length + SCALAR_BYTES;
    else if (Buffer.isBuffer(v)) total += v.length + CONTAINER_BYTES;
    else if (v !== null && typeof v === 'object') {
      total += CONTAINER_BYTES;
      if (Array.isArray(v)) for (const x of v) stack.push(x);
      else {
        // Object.keys and an index, not Object.entries (an array per property) nor for-in (slow on
        // the prototype-less objects JSONata and transforms build): ~0.25-0.45 µs against 0.2-1.6 µs
        // for a small message, on a path every published message takes.
        const o = v as Record<string, unknown>;
        const keys = Object.keys(o);
        for (let i = 0; i < keys.length; i++) {
          const k = keys[i]!;
          total += 2 * k.length;
          stack.push(o[k]);
        }
      }
    } else total += SCALAR_BYTES;
  }
  return total;
}
