import { canonical } from '../../core/canonical.js';

/**
 * `o` less the keys of `paths`, each a key (`ackTimeoutMs`) or a dotted path into nested options
 * (`producer.ackTimeoutMs`). An object that only the removal left empty goes too, so writing
 * `producer: {ackTimeoutMs: 3000}` and leaving `producer` out compare equal once it is removed.
 */
export function withoutKeys(o: object, paths: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...o };
  const nested = new Map<string, string[]>();
  for (const path of paths) {
    const dot = path.indexOf('.');
    if (dot < 0) delete out[path];
    else nested.set(path.slice(0, dot), [...(nested.get(path.slice(0, dot)) ?? []), path.slice(dot + 1)]);
  }
  for (const [key, rest] of nested) {
    const inner = out[key];
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner) || Object.keys(inner).length === 0) continue;
    const left = withoutKeys(inner, rest);
    if (Object.keys(left).length === 0) delete out[key];
    else out[key] = left;
  }
  return out;
}

/**
 * A broker kind's canReconfigure(): whether `before` and `after` (compiled settings) differ only in
 * `inPlace`, the keys (or dotted paths, withoutKeys) its runtime reads per publish or per message
 * and reconfigure() applies, so a reload keeps the connections (and the consume routes'
 * subscriptions) rather than replacing the broker. Everything else is compared whole (canonical
 * JSON: key order aside, TLS file contents included).
 */
export function onlyInPlaceChanged(before: object, after: object, inPlace: readonly string[]): boolean {
  return canonical(withoutKeys(before, inPlace)) === canonical(withoutKeys(after, inPlace));
}
