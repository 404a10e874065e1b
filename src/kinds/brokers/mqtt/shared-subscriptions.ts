/**
 * Servers without shared subscriptions. An MQTT 5 server says so in its CONNACK (Shared
 * Subscription Available 0, MQTT 5 §3.2.2.3.18) and refuses a `$share/` SUBSCRIBE (SUBACK 0x9E):
 * a route subscribing that way would read nothing, so it is not ready and its reason names the fix.
 * A 3.1.1 server cannot say it; one without them (nats-server's MQTT listener) takes the filter as
 * a plain one: docs/scaling.md.
 */

/** SUBACK reason code 0x9E: Shared Subscriptions not supported (MQTT 5). */
export const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9e;

/** What to set instead, for a route's /readyz reason and its log line (no ': ', where /readyz cuts a reason short). */
export const UNSHARED_FIX = 'set `sharedSubscriptions` to `false` on the broker (a plain subscription, so every instance reads every message; run one)';

/** The part of a CONNACK read here (as mqtt.js hands it to 'connect'). */
export interface ConnackProperties {
  readonly properties?: { readonly sharedSubscriptionAvailable?: boolean };
}

/** Why the route cannot subscribe to `filter` on the server that sent `connack`, or undefined (absent, the property means available). */
export function sharingUnavailable(connack: ConnackProperties, filter: string): string | undefined {
  if (!filter.startsWith('$share/') || connack.properties?.sharedSubscriptionAvailable !== false) return undefined;
  return `the server has no shared subscriptions (its CONNACK says Shared Subscription Available 0), so the route does not subscribe to '${filter}'; ${UNSHARED_FIX}`;
}
