import { canonical } from '../../core/canonical.js';

/**
 * A broker kind's canReconfigure(): whether `before` and `after` (compiled settings) differ only in
 * `inPlace`, the keys its runtime reads per publish or per message and reconfigure() applies, so
 * a reload keeps the connections (and the consume routes' subscriptions) rather than replacing
 * the broker. Every other key is compared whole (canonical JSON: key order aside, TLS file
 * contents included).
 */
export function onlyInPlaceChanged(before: object, after: object, inPlace: readonly string[]): boolean {
  const rest = (o: object) => canonical(Object.fromEntries(Object.entries(o).filter(([k]) => !inPlace.includes(k))));
  return rest(before) === rest(after);
}
