import { canonical, hash } from '../core/canonical.js';
import { redact } from '../config/secrets.js';
import type { ComponentPlan, ListenerPlan, Plan, RoutePlan, SourcePlan } from './types.js';
import { consumerGroupName } from './consumer-group.js';
import type { HandOverChange } from '../kinds/contracts.js';
import type { KindRegistry } from '../kinds/registry.js';
import { askedSubscription, handOverTakes, keptSubscription, renamedForwardKey } from './subscription.js';

/**
 * What a reload diff needs to know about a plan, and nothing more: each component's kind and a
 * hash of its canonical config (never the config itself, which may hold secrets). The admin
 * server serves the running plan's fingerprint (`GET /admin/plan`) so `eventgate plan --admin`
 * can say what a new config would change in a gateway it cannot read the files of.
 */
export interface PlanFingerprint {
  version: string;
  /** `key`: its socket (port, host); `config`: all of its options, which a reload applies in place when the socket stays (a token). */
  admin: { key: string; config?: string } | null;
  /** The `log` section, which a reload applies in place. */
  log?: string;
  /**
   * `replaceKey`: a hash of the options a reload cannot apply in place (ComponentPlan.replaceKey).
   * `bindings` and `server`: of a broker that binds on its server for itself (brokerBindings()).
   */
  brokers: ({ name: string; kind: string; key: string; replaceKey?: string } & BrokerBindings)[];
  /** `paths`: those clients stay connected on (listenerPaths()); `trust`: a hash of the CA bundle trusted for client certificates, null without one (absent from a gateway of an earlier version). */
  listeners: { name: string; kind: string; key: string; socketKey: string; paths: string[]; trust?: string | null }[];
  /** Set: `paths` are those clients stay connected on. Absent from a gateway older than the forty-fourth session, whose `paths` held its HTTP publish paths too. */
  heldPaths?: true;
  /**
   * `group`: the consumer group of a route that reads a broker (consumerGroup()); `subscription`:
   * a hash of what it asks of that broker (subscriptionKey()), which tells `plan` whether a
   * rebuilt route takes the running subscription over.
   */
  routes: { name: string; key: string; from: SourcePlan; group?: string; subscription?: string; renamedForward?: string; brokers: string[]; listeners: string[] }[];
  /** Clients connected to each listener that keeps connections open (filled in by the running gateway). */
  clients?: Record<string, number>;
}

const digest = (key: string) => hash(key).slice(0, 16);

/**
 * What a broker binds on its server for itself (BrokerKind.declaredBindings), for `plan` to list
 * what a reload makes, drops and leaves there: each binding in words beside a hash of them, and the
 * server they are on (bindingServer), its name beside a hash. The running gateway serves the words
 * and the name with its secrets redacted (redactFingerprint), so they are compared by hash.
 * Absent from a gateway older than this CLI, and for a kind that binds nothing itself.
 */
export interface BrokerBindings {
  bindings?: { key: string; binding: string }[];
  server?: { key: string; name: string };
}

function brokerBindings(b: ComponentPlan, registry: KindRegistry): BrokerBindings {
  const kind = registry.brokers.get(b.kind);
  const words = kind?.declaredBindings?.(b.options as never);
  if (words === undefined) return {};
  const server = kind!.bindingServer?.(b.options as never);
  return { bindings: words.map((w) => ({ key: digest(w), binding: w })), ...(server !== undefined && { server: { key: digest(server), name: server } }) };
}

/**
 * The paths of each listener that clients stay connected on: forward targets' paths, and publish
 * routes' paths on a listener whose publishers stay connected (WebSocket, not HTTP: an HTTP request
 * ends with its answer, and a keep-alive connection is the listener's, not a path's).
 */
export function listenerPaths(plan: Plan, registry: KindRegistry): Map<string, Set<string>> {
  const paths = new Map<string, Set<string>>();
  const add = (listener: string, path: string) => paths.set(listener, (paths.get(listener) ?? new Set()).add(path));
  const publishersStay = (listener: string) => registry.listeners.get(plan.listeners.get(listener)?.kind ?? '')?.publishersStay === true;
  for (const r of plan.routes.values()) {
    if (r.from.type === 'listener' && publishersStay(r.from.listener)) add(r.from.listener, r.from.path);
    for (const t of r.to) if (t.type === 'listener') add(t.listener, t.path);
  }
  return paths;
}

/** A hash of the CA bundle a listener trusts for client certificates, null without one. */
export function listenerTrust(l: ListenerPlan): string | null {
  return l.clientCa === undefined ? null : digest(l.clientCa);
}

/** `registry`: for each route's subscription key, what its broker kind's hand-over takes (subscriptionKey()). */
export function planFingerprint(plan: Plan, registry: KindRegistry): PlanFingerprint {
  const paths = listenerPaths(plan, registry);
  return {
    version: plan.version,
    admin: plan.admin ? { key: digest(plan.admin.key), config: digest(canonical(plan.admin)) } : null,
    log: digest(canonical(plan.log)),
    brokers: [...plan.brokers.values()].map((b) => ({
      name: b.name,
      kind: b.kind,
      key: digest(b.key),
      ...(b.replaceKey !== undefined && { replaceKey: digest(b.replaceKey) }),
      ...brokerBindings(b, registry),
    })),
    listeners: [...plan.listeners.values()].map((l) => ({
      name: l.name,
      kind: l.kind,
      key: digest(l.key),
      socketKey: digest(l.socketKey),
      paths: [...(paths.get(l.name) ?? [])].sort(),
      trust: listenerTrust(l),
    })),
    heldPaths: true,
    routes: [...plan.routes.values()].map((r) => ({
      name: r.name,
      key: digest(r.key),
      from: r.from,
      group: consumerGroup(r),
      subscription: subscriptionKey(r, handOverTakes(plan, r, registry)),
      renamedForward: renamedForwardDigest(plan, r, registry),
      brokers: r.brokers,
      listeners: r.listeners,
    })),
  };
}

/**
 * `fp` as the admin API serves it: the names a plan reports (routes' sources, groups, listeners'
 * paths, brokers' bindings and servers) with `secrets` redacted, as every admin answer has them
 * (a `path: /in/${TENANT}`); hashes and component names as they are. `eventgate plan --admin`
 * redacts NEW's names with NEW's secrets before comparing them with these.
 */
export function redactFingerprint(fp: PlanFingerprint, secrets: ReadonlySet<string>): PlanFingerprint {
  if (secrets.size === 0) return fp;
  const text = (s: string) => redact(s, secrets);
  return {
    ...fp,
    brokers: fp.brokers.map((b) => ({
      ...b,
      ...(b.bindings && { bindings: b.bindings.map((x) => ({ ...x, binding: text(x.binding) })) }),
      ...(b.server && { server: { ...b.server, name: text(b.server.name) } }),
    })),
    listeners: fp.listeners.map((l) => ({ ...l, paths: l.paths.map(text) })),
    routes: fp.routes.map((r) => ({
      ...r,
      from: r.from.type === 'listener' ? { ...r.from, path: text(r.from.path) } : { ...r.from, topic: text(r.from.topic), ...(r.from.group !== undefined && { group: text(r.from.group) }) },
      ...(r.group !== undefined && { group: text(r.group) }),
    })),
  };
}

/**
 * A plan whose keys are the fingerprint's hashes, so diffPlans() can compare it with a plan
 * fingerprinted the same way. Only what diffPlans reads is filled in.
 */
export function planFromFingerprint(fp: PlanFingerprint): Plan {
  return {
    version: fp.version,
    file: '',
    files: new Map(),
    admin: fp.admin ? ({ key: fp.admin.key, config: fp.admin.config } as unknown as Plan['admin']) : undefined,
    log: { level: 'info', payloads: false },
    expressions: { timeoutMs: 0, maxDepth: 0 },
    brokers: new Map(fp.brokers.map((b) => [b.name, { name: b.name, kind: b.kind, options: {}, key: b.key, replaceKey: b.replaceKey }])),
    listeners: new Map(fp.listeners.map((l) => [l.name, { name: l.name, kind: l.kind, options: {}, key: l.key, socketKey: l.socketKey }])),
    // The targets are not known here: `from.group` carries the group the route resolved (consumerGroup() reads it).
    routes: new Map(
      fp.routes.map((r) => [
        r.name,
        {
          name: r.name,
          key: r.key,
          from: r.from.type === 'broker' && r.group !== undefined ? { ...r.from, group: r.group } : r.from,
          steps: [],
          to: [],
          deadletter: undefined,
          ack: false,
          brokers: r.brokers,
          listeners: r.listeners,
        },
      ]),
    ),
  };
}

/**
 * The consumer group of a route that reads a broker, as `eventgate plan` names it: its `group`, or
 * the default the runtime gives it (consumer-group.ts): `eventgate-<route>`, and a group per
 * instance (`eventgate-<route>-<instance>`) when every target is a websocket or SSE forward;
 * none for a route whose broker reads its topic without one (an amqp queue of `queues`).
 */
export function consumerGroup(r: RoutePlan): string | undefined {
  if (r.from.type !== 'broker' || r.from.groupless) return undefined;
  return consumerGroupName(r.name, r.from, r.to, '<instance>');
}

/** A hash of renamedForwardKey(): equal ones, of a removed and an added route, are a forward route renamed (renamedForward()). */
export function renamedForwardDigest(plan: Plan, r: RoutePlan, registry: KindRegistry): string | undefined {
  const key = renamedForwardKey(r, handOverTakes(plan, r, registry));
  return key === undefined ? undefined : digest(key);
}

/**
 * A hash of what a route reading a broker asks of it (askedSubscription()), less the differences
 * its broker kind's hand-over takes (`takes`, handOverTakes()), undefined for a route from a
 * listener: two equal keys on one broker instance mean a rebuilt route takes the running
 * subscription over, with no group to join again. A CLI and a gateway of versions that disagree on
 * `takes` see different keys: plan then says "rejoins", never "kept" for a route that rejoins.
 */
export function subscriptionKey(r: RoutePlan, takes: readonly HandOverChange[]): string | undefined {
  const asked = askedSubscription(r, '<instance>');
  return asked && digest(canonical(keptSubscription(asked, takes)));
}
