import type { Message } from './message.js';

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
  for (const [k, v] of Object.entries(msg.headers)) total += 2 * (k.length + v.length) + SCALAR_BYTES;
  return total;
}

export function approxValueBytes(value: unknown): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') total += 2 * v.length + SCALAR_BYTES;
    else if (Buffer.isBuffer(v)) total += v.length + CONTAINER_BYTES;
    else if (v !== null && typeof v === 'object') {
      total += CONTAINER_BYTES;
      if (Array.isArray(v)) for (const x of v) stack.push(x);
      else
        for (const [k, x] of Object.entries(v)) {
          total += 2 * k.length;
          stack.push(x);
        }
    } else total += SCALAR_BYTES;
  }
  return total;
}
