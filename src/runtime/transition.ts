import { type BrokerRuntime, type ListenerBindings, type ListenerRuntime, type ReplaySource, type RuntimeEnv, BROKER_CONNECTING, STOP_REASON } from '../kinds/contracts.js';
import { BindError } from '../kinds/listeners/bind.js';
import type { KindRegistry } from '../kinds/registry.js';
import type { Logger } from '../log.js';
import type { Change, Transition } from '../plan/diff.js';
import { sameSocket, socketOf } from '../plan/conflicts.js';
import type { PathPart } from '../config/source.js';
import type { AdminPlan, ListenerPlan, Plan, RoutePlan } from '../plan/types.js';
import type { RouteRuntime } from './route.js';

/** The admin server as a transition manages it: one more component with a socket. */
export interface AdminComponent {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Options that need no new socket (token, tap rate, ...). */
  configure(plan: AdminPlan): void;
}

/** The running components; a transition changes them in place (maps are swapped whole at commit). */
export interface Components {
  readonly brokers: Map<string, BrokerRuntime>;
  readonly listeners: Map<string, ListenerRuntime>;
  readonly routes: Map<string, RouteRuntime>;
  admin: AdminComponent | undefined;
}

export interface TransitionEnv {
  registry: KindRegistry;
  runtime: RuntimeEnv;
  logger: Logger;
  createAdmin(plan: AdminPlan): AdminComponent;
  createRoute(plan: RoutePlan, brokers: ReadonlyMap<string, BrokerRuntime>, listeners: ReadonlyMap<string, ListenerRuntime>): RouteRuntime;
  /** True once the gateway shuts down: a transition then waits for nothing it can do without. */
  stopping(): boolean;
  /**
   * True once a newer change waits behind this reload: the wait for new brokers ends then, as at
   * its deadline, so an edit made meanwhile is not held for the rest of it (it is applied next).
   */
  superseded(): boolean;
  /**
   * The old consume routes this transition stops or hands over, and when they have: a shutdown
   * that cannot wait for the reload to end stops them within its own drain budget (gateway.ts).
   */
  consumersLeaving(routes: readonly RouteRuntime[], stopped: Promise<unknown>): void;
}

/**
 * How long the build phase waits for a new broker's connection before the commit goes on without
 * it (the server may be away; the broker keeps trying, as at startup, and /readyz says so).
 */
export const BROKER_CONNECT_WAIT_MS = 5000;

/** Components whose running instance a failed commit had stopped (to free its port): they must be brought back. */
export interface Lost {
  listeners: string[];
  admin: boolean;
}

export type TransitionOutcome =
  /** `retired` settles when the old components have drained and stopped (in the background). */
  | { result: 'applied'; retired: Promise<void>; retiring: boolean }
  /** Nothing live was touched; `reason` names the component that could not start (at `at` in the config, when known). */
  | { result: 'rejected'; reason: string; at?: readonly PathPart[]; shuttingDown?: true }
  /** A commit step failed after stopping live components (`lost`); everything new was undone. */
  | { result: 'rolled_back'; reason: string; lost: Lost; at?: readonly PathPart[] };

/** A component that could not start, with where the config declares it (so the error can carry file:line:col). */
class StartFailure extends Error {
  constructor(
    readonly at: readonly PathPart[],
    message: string,
  ) {
    super(message);
  }
}

/**
 * Starts a built component; a failure names it and where it is declared: a socket that could not
 * bind, at the `port:` or `host:` to change.
 */
async function startOrFail<T>(component: { start(): Promise<T> }, at: readonly PathPart[], what: string, portHolder?: string): Promise<T> {
  return component.start().catch((err: Error) => {
    const message = err instanceof BindError && err.code === 'EADDRINUSE' && portHolder ? heldByOurOwn(err, portHolder) : err.message;
    throw new StartFailure(err instanceof BindError && err.key ? [...at, err.key] : at, `${what}: ${message}`);
  });
}

/**
 * A new socket's address that a component of the running config holds (one this reload removes or
 * moves to another port): new sockets bind before the old ones stop, so only a component kept
 * under its own name takes its port over. Undefined when no running component's socket clashes
 * with `socket` (same port, and the same host or either a wildcard, as conflicts.ts judges two binds).
 */
function runningHolder(t: Transition, socket: { host: string; port: number } | undefined, self: string): string | undefined {
  if (socket === undefined || socket.port === 0) return undefined;
  for (const c of t.listeners) {
    if (c.name === self || (c.op !== 'remove' && c.op !== 'replace')) continue;
    const before = socketOf(c.before.options);
    const moved = c.op === 'remove' || socketOf(c.after.options)?.port !== before?.port;
    if (before && moved && sameSocket(before, socket)) return `listener '${c.name}'`;
  }
  const admin = t.admin;
  if ((admin?.op === 'remove' || admin?.op === 'replace') && (admin.op === 'remove' || admin.after.port !== admin.before.port) && sameSocket(admin.before, socket)) return 'the admin server';
  return undefined;
}

/** The bind failure of a port the running config's `holder` holds until the reload is done, with what to do instead. */
function heldByOurOwn(err: BindError, holder: string): string {
  const address = /^cannot bind (\S+):/.exec(err.message)?.[1] ?? 'the port';
  const keep = holder.startsWith('listener') ? 'keep that listener (its name) on the port and change it in place, or ' : '';
  return `cannot bind ${address}: ${holder} of the running config holds the port until this reload is done (new sockets bind before the old ones stop: only a listener that keeps its name takes its port over); ${keep}free the port in one reload and take it in the next (EADDRINUSE)`;
}

/**
 * Runs a transition in three phases (Vector's topology reload, with sockets kept):
 * 1. build — new brokers, listeners and the admin server are created and started (bound) before
 *    anything live is touched; a failure stops what was built: `rejected`.
 * 2. commit — a component whose new socket needs its predecessor's port takes it over (stop the
 *    old, bind the new; a listener serves the running routes until the swap). This can fail
 *    (another process took the port): everything new is stopped (a listener that took its port
 *    over drains first) and the reload is `rolled_back`; the caller restores what was `lost` with a second
 *    transition (restoreTransition). After the takeovers nothing can fail: options are applied in
 *    place, the maps swapped, listeners bound to their new routes, consumers handed over.
 * 3. retire — routes, listeners and brokers that were replaced or removed drain and stop.
 */
export async function applyTransition(live: Components, t: Transition, env: TransitionEnv, drainMs: number): Promise<TransitionOutcome> {
  const takesOver = (c: Change<{ port: number; host?: string }>): boolean => c.op === 'replace' && c.before.port !== 0 && c.before.port === c.after.port;
  const listenerTakeovers = t.listeners.filter((c): c is Extract<Change<ListenerPlan>, { op: 'replace' }> => takesOver(listenerPorts(c)));
  const adminTakeover = t.admin !== undefined && takesOver(t.admin);

  // --- build
  const built = { brokers: new Map<string, BrokerRuntime>(), listeners: new Map<string, ListenerRuntime>(), admin: undefined as AdminComponent | undefined };
  const undoBuild = async () => {
    await built.admin?.stop().catch(() => undefined);
    await Promise.allSettled([...built.listeners.values()].map((l) => l.stop({ drainMs: 0 })));
    await Promise.allSettled([...built.brokers.values()].map((b) => b.stop()));
  };
  try {
    for (const c of t.brokers) {
      if (c.op !== 'add' && c.op !== 'replace') continue;
      // A client library that throws on options the config checks let through is this broker's failure, said at its place.
      const b = await startOrFail({ start: async () => env.registry.brokers.get(c.after.kind)!.create(c.name, c.after.options, env.runtime) }, ['brokers', c.name], `broker '${c.name}'`);
      built.brokers.set(c.name, b);
      // Beside a running config, what would change its routing on the server waits for the commit.
      if (t.before) b.holdUntilCommit?.();
      await startOrFail(b, ['brokers', c.name], `broker '${c.name}'`);
    }
    // Routes move to a replaced broker at the commit: one still connecting would answer their
    // publishes 503 where its connected predecessor served them. (Added brokers serve only new
    // routes, and at startup /readyz tells when they are connected.)
    const successors = t.brokers.filter((c) => c.op === 'replace' && live.brokers.get(c.name)?.health().ready).map((c) => built.brokers.get(c.name)!);
    await connected(successors, BROKER_CONNECT_WAIT_MS, env);
    // A server that refused what the new options ask (not one away) would take a working broker
    // down for good: the running one stays, and the reload says why. One refused as its
    // predecessor is (a nats stream the server refuses to both) changes nothing for the worse.
    const refused = successors.find((b) => b.refusal?.() !== undefined && live.brokers.get(b.name)!.refusal?.() === undefined);
    if (refused) throw new StartFailure(['brokers', refused.name], `broker '${refused.name}': refused with its new options (the running one keeps serving): ${refused.refusal!()}`);
    await markSourceEnds(t, (name) => built.brokers.get(name) ?? live.brokers.get(name));
    for (const c of t.listeners) {
      if ((c.op !== 'add' && c.op !== 'replace') || listenerTakeovers.includes(c as never)) continue;
      const l = env.registry.listeners.get(c.after.kind)!.create(c.name, c.after.options, env.runtime);
      built.listeners.set(c.name, l);
      await startOrFail(l, ['listeners', c.name], `listener '${c.name}'`, runningHolder(t, socketOf(c.after.options), c.name));
    }
    if (t.admin && (t.admin.op === 'add' || t.admin.op === 'replace') && !adminTakeover) {
      built.admin = env.createAdmin(t.admin.after);
      await startOrFail(built.admin, ['admin'], 'admin server', runningHolder(t, t.admin.after, ''));
    }
  } catch (err) {
    await undoBuild();
    return { result: 'rejected', reason: (err as Error).message, at: (err as Partial<StartFailure>).at };
  }
  // A shutdown that began while a reload built (waiting for a new broker's connection, say) must
  // find the running config in place: nothing new is swapped in, started, or announced as ready
  // for the shutdown to take down again (a new consumer would join its group only to leave it).
  if (t.before && env.stopping()) {
    await undoBuild();
    return { result: 'rejected', reason: 'the gateway is shutting down', shuttingDown: true };
  }

  // --- commit, part that may fail: sockets that take over their predecessor's port.
  const lost: Lost = { listeners: [], admin: false };
  try {
    for (const c of listenerTakeovers) {
      lost.listeners.push(c.name);
      await live.listeners.get(c.name)!.stop({ drainMs, reason: STOP_REASON.replace });
      const l = env.registry.listeners.get(c.after.kind)!.create(c.name, c.after.options, env.runtime);
      built.listeners.set(c.name, l);
      await startOrFail(l, ['listeners', c.name], `listener '${c.name}'`);
      // Its port is served from here on: until the swap binds the new routes, the running ones
      // answer on it (the next takeover's drain and the brokers' commit come between). Routes of
      // another kind of listener speak another protocol: one whose kind changed waits unbound.
      if (c.before.kind === c.after.kind) l.bind(publishOnly(bindingsFor(c.name, t.before!, live.routes)));
    }
    if (adminTakeover) {
      lost.admin = true;
      await live.admin?.stop();
      built.admin = env.createAdmin((t.admin as Extract<Change<AdminPlan>, { op: 'replace' }>).after);
      await startOrFail(built.admin, ['admin'], 'admin server');
    }
  } catch (err) {
    // A listener that took its port over has served the running routes: its requests in flight
    // finish there (as the old one's did at the takeover) before the restore binds the port again.
    const served = listenerTakeovers.flatMap((c) => built.listeners.get(c.name) ?? []);
    for (const l of served) built.listeners.delete(l.name);
    await Promise.allSettled(served.map((l) => l.stop({ drainMs, reason: STOP_REASON.replace })));
    await undoBuild();
    return { result: 'rolled_back', reason: (err as Error).message, lost, at: (err as Partial<StartFailure>).at };
  }

  // --- commit, part that cannot fail.
  await Promise.all([...built.brokers.values()].map((b) => b.commit?.()));
  for (const c of t.brokers) if (c.op === 'reconfigure') live.brokers.get(c.name)!.reconfigure(c.after.options);
  for (const c of t.listeners) if (c.op === 'reconfigure') live.listeners.get(c.name)!.reconfigure(c.after.options);
  const old = {
    brokers: t.brokers.filter((c) => c.op === 'remove' || c.op === 'replace').map((c) => live.brokers.get(c.name)!),
    listeners: t.listeners
      .filter((c) => c.op === 'remove' || (c.op === 'replace' && !listenerTakeovers.includes(c)))
      .map((c) => ({ listener: live.listeners.get(c.name)!, reason: STOP_REASON[c.op as 'remove' | 'replace'] })),
    routes: t.routes.filter((c) => c.op === 'remove' || c.op === 'replace').map((c) => live.routes.get(c.name)!),
  };
  swap(live.brokers, t.brokers, built.brokers);
  swap(live.listeners, t.listeners, built.listeners);
  const newRoutes = new Map<string, RouteRuntime>();
  for (const c of t.routes) if (c.op === 'add' || c.op === 'replace') newRoutes.set(c.name, env.createRoute(c.after, live.brokers, live.listeners));
  const predecessors = new Map(old.routes.map((r) => [r.name, r]));
  swap(live.routes, t.routes, newRoutes);
  for (const [name, listener] of live.listeners) listener.bind(bindingsFor(name, t.after, live.routes));
  // A rebuilt consume route that asks the same of the same broker takes its predecessor's live
  // subscription over (no gap for at-most-once sources, no new MQTT session). Other old consumers
  // stop (finishing and committing the message in hand) before their successors start.
  const starting: RouteRuntime[] = [];
  const stopping: Promise<void>[] = [];
  const leaving: RouteRuntime[] = [];
  for (const r of newRoutes.values()) {
    const before = predecessors.get(r.name);
    const handedOver = before && r.takeOver(before, drainMs, env.registry);
    if (handedOver) {
      predecessors.delete(r.name);
      stopping.push(handedOver);
      leaving.push(before);
    } else starting.push(r);
  }
  // A forward route renamed without a group takes over the subscription of the route it replaces
  // (renamedForward): a new group would start at the latest message, past what came between.
  const removed = new Set(t.routes.filter((c) => c.op === 'remove').map((c) => c.name));
  for (const r of [...starting]) {
    if (predecessors.has(r.name)) continue;
    for (const [name, before] of predecessors) {
      const handedOver = removed.has(name) ? r.takeOver(before, drainMs, env.registry, true) : undefined;
      if (!handedOver) continue;
      predecessors.delete(name);
      starting.splice(starting.indexOf(r), 1);
      stopping.push(handedOver);
      leaving.push(before);
      break;
    }
  }
  // A route starting in its own per-instance group that a renamed route holds starts in another.
  const held = new Set([...live.routes.values()].flatMap((r) => r.takenOverGroup() ?? []));
  for (const r of starting) r.avoidGroups(held);
  // A removed route whose broker, topic and group no route of the new config consumes retires its
  // subscription: nothing resumes or takes over what the server keeps for it (an MQTT session).
  const consumedAfter = new Set([...live.routes.values()].map((r) => r.consumes()));
  for (const r of predecessors.values()) {
    const key = r.consumes();
    stopping.push(r.stopConsuming(drainMs, false, removed.has(r.name) && key !== undefined && !consumedAfter.has(key)));
    leaving.push(r);
  }
  const stopped = Promise.all(stopping);
  env.consumersLeaving(leaving, stopped);
  await stopped;
  // A shutdown began meanwhile: it stopped the routes of the new config (it waits for a reload
  // only within its drain budget), and one started now would consume after the drain.
  if (!env.stopping()) for (const r of starting) r.start();
  if (t.admin?.op === 'remove' || (t.admin?.op === 'replace' && !adminTakeover)) await live.admin?.stop();
  if (t.admin?.op === 'remove') live.admin = undefined;
  else if (built.admin) live.admin = built.admin;
  else if (t.admin?.op === 'reconfigure') live.admin?.configure(t.admin.after);

  // --- retire: requests still inside old routes finish there (bounded by drainMs) without
  // holding up the reload; only then do the components they use go away.
  const retiring = old.routes.some((r) => r.pending > 0);
  const retired = (async () => {
    const deadline = Date.now() + drainMs;
    // The listeners going away take nothing new from here on (a client told why can come again on
    // a new connection, to their successors), so nothing reaches a route after its close().
    const quiesced = old.listeners.map(({ listener, reason }) => listener.quiesce?.({ drainMs, reason }));
    await Promise.all(old.routes.map((r) => r.drain(drainMs)));
    await Promise.allSettled(quiesced);
    for (const r of old.routes) r.close();
    await Promise.allSettled(old.listeners.map(({ listener, reason }) => listener.stop({ drainMs: Math.max(0, deadline - Date.now()), reason })));
    await Promise.allSettled(old.brokers.map((b) => b.stop()));
  })();
  return { result: 'applied', retired, retiring };
}

/**
 * The transition that brings back what a rolled-back commit had stopped: from the running plan
 * without those components to the running plan. The same code as any reload, so the lost
 * listeners are created and bound again and the routes that hold them are rebuilt.
 */
export function restoreTransition(running: Plan, lost: Lost, diff: (before: Plan, after: Plan) => Transition): Transition {
  const without: Plan = { ...running, listeners: new Map([...running.listeners].filter(([name]) => !lost.listeners.includes(name))), admin: lost.admin ? undefined : running.admin };
  return diff(without, running);
}

/**
 * Lets the brokers of the consume routes that start reading a source (added, or their `from`
 * changed) look at where it ends before the listeners take the new config (BrokerRuntime.markSourceEnd):
 * one round trip per such route, at once; a route reading what it read before needs none.
 */
async function markSourceEnds(t: Transition, brokerOf: (name: string) => BrokerRuntime | undefined): Promise<void> {
  const looks: Promise<void>[] = [];
  for (const c of t.routes) {
    if (c.op !== 'add' && c.op !== 'replace') continue;
    const from = c.after.from;
    if (from.type !== 'broker') continue;
    if (c.op === 'replace' && c.before.from.type === 'broker' && c.before.from.broker === from.broker && c.before.from.topic === from.topic) continue;
    const look = brokerOf(from.broker)?.markSourceEnd?.(c.name, from.topic);
    if (look) looks.push(look);
  }
  await Promise.all(looks);
}

/** Resolves once every broker is ready, or after `ms` (naming those still not connected), or at shutdown. */
async function connected(brokers: BrokerRuntime[], ms: number, env: TransitionEnv): Promise<void> {
  const deadline = Date.now() + ms;
  let waiting = brokers.filter((b) => !b.health().ready);
  if (waiting.length > 0) env.logger.info({ brokers: waiting.map((b) => b.name) }, 'waiting for the new broker connections before the swap');
  const started = Date.now();
  // A newer change waiting ends the wait, but not before each new broker's first try is answered:
  // one the server refuses (a login, a certificate) would otherwise be swapped in, down for good.
  const superseded = () => env.superseded() && waiting.every((b) => b.health().detail !== BROKER_CONNECTING);
  while (waiting.length > 0 && Date.now() < deadline && !env.stopping() && !superseded() && !waiting.some((b) => b.refusal?.() !== undefined)) {
    await new Promise((r) => setTimeout(r, 10));
    waiting = waiting.filter((b) => !b.health().ready);
  }
  // A shutdown ends the wait early, and the reload does not go on (applyTransition).
  if (env.stopping() || waiting.some((b) => b.refusal?.() !== undefined)) return;
  const why =
    env.superseded() && waiting.length > 0
      ? 'new broker not connected yet; a newer change is waiting, so the reload goes on and it keeps trying'
      : 'new broker not connected yet; the reload goes on and it keeps trying';
  for (const b of waiting) env.logger.warn({ broker: b.name, detail: b.health().detail, waitedMs: Date.now() - started }, why);
}

/** The port and host of a listener change, for the takeover check. */
function listenerPorts(c: Change<ListenerPlan>): Change<{ port: number; host?: string }> {
  const ports = (p: ListenerPlan) => p.options as { port: number; host?: string };
  switch (c.op) {
    case 'add':
      return { ...c, after: ports(c.after) };
    case 'remove':
      return { ...c, before: ports(c.before) };
    default:
      return { ...c, before: ports(c.before), after: ports(c.after) };
  }
}

/** Puts `built` in place of replaced and added components and drops removed ones. */
function swap<T, P>(map: Map<string, T>, changes: readonly Change<P>[], built: ReadonlyMap<string, T>): void {
  for (const c of changes) if (c.op === 'remove') map.delete(c.name);
  for (const [name, component] of built) map.set(name, component);
}

/**
 * A taken-over listener's bindings until the swap: its publish paths only (and of those, none a
 * route also forwards to, a WebSocket room's). The running routes' forward targets push to the
 * listener they were built with (the old socket), so an event stream or WebSocket client let in
 * on the new socket meanwhile would miss what they deliver in that window, unknowingly; refused
 * (404), it connects again, and an event stream resumes from its id.
 */
function publishOnly(b: ListenerBindings): ListenerBindings {
  const publish = new Map([...b.publish].filter(([path]) => !b.forward.has(path)));
  return { publish, forward: new Set(), forwardAuth: new Map(), replay: new Map() };
}

/** What a listener serves under `plan`: the publish routes from it, the forward paths to it. */
export function bindingsFor(listener: string, plan: Plan, routes: ReadonlyMap<string, RouteRuntime>): ListenerBindings {
  const bindings: ListenerBindings = { publish: new Map(), forward: new Set(), forwardAuth: new Map(), replay: new Map() };
  /** Paths more than one route forwards to: their event ids name each route's positions. */
  const shared = new Set<string>();
  for (const name of plan.routes.keys()) {
    // The running route's plan, not the new one: a kept route keeps its compiled auth, so the
    // listener can tell that what guards a path did not change.
    const running = routes.get(name)!;
    const r = running.plan;
    if (r.from.type === 'listener' && r.from.listener === listener) bindings.publish.set(r.from.path, running);
    for (const [j, t] of r.to.entries()) {
      if (t.type !== 'listener' || t.listener !== listener) continue;
      if (bindings.forward.has(t.path)) shared.add(t.path);
      bindings.forward.add(t.path);
      if (r.from.type === 'broker') {
        const sources = bindings.replay!.get(t.path) ?? new Map<string, ReplaySource>();
        bindings.replay!.set(t.path, sources.set(r.name, routes.get(r.name)!));
      }
      const gate = running.forwardGates[j];
      if (gate) bindings.forwardAuth!.set(t.path, gate);
    }
  }
  bindings.sharedForward = shared;
  return bindings;
}
