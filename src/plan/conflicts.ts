import { redact } from '../config/secrets.js';
import type { PathPart } from '../config/source.js';
import type { KindRegistry } from '../kinds/registry.js';
import { computedTopicHint, readsAsExpression } from './targets.js';
import type { AdminPlan, ComponentPlan, ListenerPlan, RoutePlan } from './types.js';

export interface Conflict {
  path: PathPart[];
  message: string;
  /** Where the other party is, to name it in the message ("line 12"). */
  other?: PathPart[];
}

const WILDCARDS = new Set(['0.0.0.0', '::', '']);

/** Two binds collide when the ports match and the hosts match or either is a wildcard (Linux refuses the second with EADDRINUSE). */
export function sameSocket(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  if (a.port === 0 || b.port === 0 || a.port !== b.port) return false;
  return a.host === b.host || WILDCARDS.has(a.host) || WILDCARDS.has(b.host);
}

/** The host and port a listener's options bind (its default host, every address, when it names none). */
export function socketOf(options: Record<string, unknown>): { host: string; port: number } | undefined {
  return typeof options.port === 'number' ? { host: typeof options.host === 'string' ? options.host : '0.0.0.0', port: options.port } : undefined;
}

/**
 * What `run` would only find out at run time, found from the plan: two sockets on one
 * host:port, the admin server on a listener's port, a route reading a topic of an in-process
 * broker that no route writes to (it can never receive a message).
 */
export function findConflicts(plan: {
  registry: KindRegistry;
  admin: AdminPlan | undefined;
  brokers: ReadonlyMap<string, ComponentPlan>;
  listeners: ReadonlyMap<string, ListenerPlan>;
  routes: readonly { index: number; route: RoutePlan }[];
  /** False when some route did not compile (it has its own problem): which topics are written is then not known. */
  allRoutes?: boolean;
  /** The config's secrets (secretValues): a topic that holds one is not rewritten into a hint, which redaction would not recognise. */
  secrets?: ReadonlySet<string>;
}): Conflict[] {
  const out: Conflict[] = [];
  const bound: { name: string; socket: { host: string; port: number } }[] = [];
  for (const [name, l] of plan.listeners) {
    const socket = socketOf(l.options);
    if (!socket) continue;
    const other = bound.find((b) => sameSocket(b.socket, socket));
    if (other) {
      out.push({
        path: ['listeners', name, 'port'],
        other: ['listeners', other.name, 'port'],
        message: `listener '${name}' and listener '${other.name}' both bind port ${socket.port}${socket.host === other.socket.host ? ` on ${socket.host}` : ''}; the second would fail with EADDRINUSE. Give each listener its own port`,
      });
    } else bound.push({ name, socket });
  }
  if (plan.admin) {
    const socket = { host: plan.admin.host, port: plan.admin.port };
    const other = bound.find((b) => sameSocket(b.socket, socket));
    if (other)
      out.push({
        path: ['admin', 'port'],
        other: ['listeners', other.name, 'port'],
        message: `the admin server and listener '${other.name}' both bind port ${socket.port}; the admin server needs a port of its own`,
      });
  }

  // Topics of in-process brokers that some route writes to; a topic computed per message may be any.
  const written = new Set<string>();
  const anyTopic = new Set<string>();
  for (const { route } of plan.routes) {
    for (const t of route.to) {
      if (t.type !== 'broker') continue;
      if (t.topicExpr) anyTopic.add(t.broker);
      else written.add(`${t.broker}\0${t.topic}`);
    }
    if (route.deadletter) written.add(`${route.deadletter.broker}\0${route.deadletter.topic}`);
    // A step that writes to a broker (a dead-letter topic of a validate step) does not say which topic.
    for (const s of route.steps) for (const b of s.brokers ?? []) anyTopic.add(b);
  }
  for (const { index, route } of plan.allRoutes === false ? [] : plan.routes) {
    const from = route.from;
    if (from.type !== 'broker') continue;
    const broker = plan.brokers.get(from.broker);
    if (!broker || !plan.registry.brokers.get(broker.kind)?.inProcess) continue;
    if (anyTopic.has(from.broker) || written.has(`${from.broker}\0${from.topic}`)) continue;
    const writers = [...new Set([...written].filter((w) => w.startsWith(`${from.broker}\0`)).map((w) => w.split('\0')[1]!))];
    // `topic: $string(id)` beside `key: $string(id)`: the reason no route writes the topic, said here since warnings wait for a valid config.
    const asExpression = writers.find(readsAsExpression);
    // A topic from `${ROUTED}` rewritten as an expression (`"orders." & region & ".<secret>"`) would show its value past the redaction.
    const asHint = (topic: string) =>
      plan.secrets !== undefined && redact(topic, plan.secrets) !== topic ? 'a topic computed per message is written topic: { expression: ... }' : computedTopicHint(topic);
    // `from: {broker}` and `to: {listener, path}` in a config where no route writes the broker: a route meant to publish what clients send, the two swapped.
    const forward = writers.length === 0 && route.to.length === 1 && route.to[0]!.type === 'listener' ? route.to[0] : undefined;
    const swapped = forward
      ? `; if clients are meant to send to ${forward.path}, from and to are swapped: write from: {listener: ${forward.listener}, path: ${forward.path}} and to: {broker: ${from.broker}, topic: ${from.topic}}`
      : '';
    out.push({
      path: ['routes', index, 'from', 'topic'],
      message: `route '${route.name}' can never receive a message: '${from.broker}' is a ${broker.kind} broker, whose topics only this gateway's routes write to, and no route writes to topic '${from.topic}'${writers.length ? ` (routes write to: ${writers.join(', ')})` : ''}${asExpression === undefined ? '' : `; '${asExpression}' is a name, as written, not an expression: ${asHint(asExpression)}`}${swapped}`,
    });
  }
  return out;
}
