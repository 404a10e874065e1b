import { canonical } from '../core/canonical.js';
import type { HandOverChange, Qos, StartFrom } from '../kinds/contracts.js';
import type { KindRegistry } from '../kinds/registry.js';
import { consumerGroupName, groupPerInstance } from './consumer-group.js';
import type { Plan, RoutePlan } from './types.js';

/**
 * What a consume route asks of the broker it reads, from its plan alone: the data of its
 * SubscribeSpec, to which the runtime adds the closures (`undecodable` when `deadletter`,
 * `orderKeys` when `ordered`). One place for the two that must agree on it: the runtime, whose
 * rebuilt route takes its predecessor's live subscription over when both ask the same of the same
 * broker (RouteRuntime.takeOver), and `eventgate plan`, which then names no group change.
 */
export interface AskedSubscription {
  broker: string;
  topic: string;
  group: string;
  startFrom: StartFrom | undefined;
  /** `latest` for a route whose targets are all forwards (browsers want what happens now); else the broker's default. */
  defaultStartFrom: StartFrom | undefined;
  perInstance: boolean;
  /** Messages of a partition in hand at once: the smallest webhook concurrency of a route whose targets are all webhooks, else 1. */
  inFlight: number;
  /** With `inFlight` above 1: a webhook keeps an order (`orderBy`). */
  ordered: boolean;
  /** The route has a `deadletter` target (where an undecodable batch goes). */
  deadletter: boolean;
  qos: Qos | undefined;
}

/** What route `r` asks of its broker, its per-instance group named for `instance`; undefined for a route from a listener. */
export function askedSubscription(r: RoutePlan, instance: string): AskedSubscription | undefined {
  const from = r.from;
  if (from.type !== 'broker') return undefined;
  const webhooks = r.to.flatMap((t) => (t.type === 'http' ? [t.webhook] : []));
  const inFlight = webhooks.length > 0 && webhooks.length === r.to.length ? Math.min(...webhooks.map((w) => w.concurrency)) : 1;
  return {
    broker: from.broker,
    topic: from.topic,
    group: consumerGroupName(r.name, from, r.to, instance),
    startFrom: from.startFrom,
    defaultStartFrom: r.to.every((t) => t.type === 'listener') ? 'latest' : undefined,
    perInstance: groupPerInstance(from, r.to),
    inFlight,
    ordered: inFlight > 1 && webhooks.some((w) => w.orderBy !== undefined),
    deadletter: r.deadletter !== undefined,
    qos: from.qos,
  };
}

/**
 * The differences in what route `r` of `plan` asks that its broker kind's hand-over takes in place
 * (BrokerKind.handOverTakes): the runtime's takeOver and `eventgate plan` read them here.
 */
export function handOverTakes(plan: Plan, r: RoutePlan, registry: KindRegistry): readonly HandOverChange[] {
  if (r.from.type !== 'broker') return [];
  const kind = plan.brokers.get(r.from.broker)?.kind;
  return (kind !== undefined && registry.brokers.get(kind)?.handOverTakes) || [];
}

/** What route `r` asks of its broker without the differences its kind's hand-over takes: equal ones are taken over. */
export function keptSubscription(asked: AskedSubscription, takes: readonly HandOverChange[]): Partial<AskedSubscription> {
  const kept: Partial<AskedSubscription> = { ...asked };
  for (const field of takes) delete kept[field];
  return kept;
}

/**
 * Whether route `after`, which a reload adds as it removes `before`, is `before` renamed: both read
 * the same topic of the same broker for websocket and SSE forwards only, in their default group
 * (one per instance, named for the route), and ask the same but for that name. The renamed route
 * then takes the running subscription over, in the old route's group (RouteRuntime.takeOver), as a
 * rebuilt route of the same name does: a new group of a forward route starts at the latest
 * message, and what was published between the old route's stop and its start reached no client.
 * Other routes keep their group only by name (`group:`): a new default group of a durable route
 * reads from the broker's default, and a group taken over would last only until the next start.
 */
export function renamedForward(before: RoutePlan, after: RoutePlan, takes: readonly HandOverChange[]): boolean {
  const was = renamedForwardKey(before, takes);
  return was !== undefined && was === renamedForwardKey(after, takes);
}

/** What a forward route in its default group asks of its broker but for the group's name (renamedForward); undefined for other routes. */
export function renamedForwardKey(r: RoutePlan, takes: readonly HandOverChange[]): string | undefined {
  const asked = askedSubscription(r, '<instance>');
  return asked?.perInstance ? canonical(keptSubscription({ ...asked, group: '' }, takes)) : undefined;
}
