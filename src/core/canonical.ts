import { createHash } from 'node:crypto';

/** JSON with object keys sorted, so two configs that differ only in key order compare equal. */
export function canonical(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}

export function hash(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}
