// JSON pointers (RFC 6901) as $refs and ajv's schema paths write them: made of keys, and read back.

/** A JSON pointer of keys (RFC 6901). */
export function pointerOf(keys: readonly (string | number)[]): string {
  return keys.map((k) => `/${String(k).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** The keys of a JSON pointer (`/components/schemas/a`, URI-decoded as in a $ref), or undefined. */
export function pointerKeys(ptr: string): string[] | undefined {
  if (ptr === '') return [];
  if (!ptr.startsWith('/')) return undefined;
  try {
    return ptr
      .slice(1)
      .split('/')
      .map((raw) => decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~'));
  } catch {
    return undefined;
  }
}
