/**
 * The consumer group a route reading a broker consumes as — its `from.group`, else one from its
 * name — in one place for the three that need it: the compiler (checks it against the broker,
 * BrokerKind.groupProblem), `eventgate plan` (shows it) and the runtime (subscribes with it).
 */

/**
 * Whether the route's default group is one per instance: every target is a websocket or SSE
 * forward, so each gateway instance must see every message (a shared group would split them).
 */
export function groupPerInstance(from: { group?: string }, to: readonly { type: string }[]): boolean {
  return from.group === undefined && to.length > 0 && to.every((t) => t.type === 'listener');
}

/** `from.group`, else `eventgate-<route>`, or `eventgate-<route>-<instance>` for a per-instance group. */
export function consumerGroupName(route: string, from: { group?: string }, to: readonly { type: string }[], instance: string): string {
  return from.group ?? (groupPerInstance(from, to) ? `eventgate-${route}-${instance}` : `eventgate-${route}`);
}
