import { isHidden } from '../config/prune.js';
import type { PathPart } from '../config/source.js';
import { canonical } from '../core/canonical.js';
import { REDACTED } from '../config/secrets.js';
import type { PathClaims } from '../kinds/contracts.js';
import { aKind, type CompileContext } from './context.js';
import type { RawRoute } from './raw.js';
import type { CompiledChainStep, StepCompiler } from './steps.js';
import { warnUndeclaredFields } from './field-reads.js';
import { warnHeaderSpelling } from './header-reads.js';
import { type RequestPath, UnboundReads } from './variable-reads.js';
import { compileTargets } from './targets.js';
import type { ComponentPlan, ListenerPlan, RoutePlan, SourcePlan } from './types.js';
import { consumerGroupName, groupPerInstance } from './consumer-group.js';

/**
 * The routes, with what only the set of them can show: names used twice, two routes publishing
 * on the same listener path, routes forwarding to one path with different auth.
 */
export function compileRoutes(
  ctx: CompileContext,
  steps: StepCompiler,
  brokers: Map<string, ComponentPlan>,
  listeners: Map<string, ListenerPlan>,
  chains: Map<string, CompiledChainStep[] | undefined>,
): Map<string, RoutePlan> {
  const raws = ctx.config.routes ?? [];
  const routes = new Map<string, RoutePlan>();
  const names = new Map<string, number>();
  /** listener → the publish paths claimed on it so far, and the index of the route claiming each. */
  const claimed = new Map<string, { paths: PathClaims; route: Map<string, number> }>();
  const forwardAuth = new Map<string, { auth: string; route: string }>();
  /** broker + a group's consumer on its server (BrokerKind.sharedConsumer) → the first route reading through it. */
  const consumers = new Map<string, SharedConsumer>();
  const unbound = new UnboundReads();
  const written = (ctx.src.value as { routes?: unknown } | undefined)?.routes;
  /** Says a second use of a route name; false when the name is new (now taken). */
  const repeats = (name: string, at: PathPart[]): boolean => {
    const first = names.get(name);
    if (first === undefined) {
      names.set(name, at[1] as number);
      return false;
    }
    // Where the first is written, not its index: with fragments merged in, an index counts routes of other files.
    const { line } = ctx.src.locate(['routes', first, 'name'], 'value');
    const firstFile = ctx.fileOf(['routes', first]);
    const where = firstFile === ctx.fileOf(at) ? `line ${line}` : `${firstFile}:${line}`;
    ctx.report([...at, 'name'], 'EG_CONFIG_CONFLICT', `route name '${name}' is already used by the route at ${where}; route names must be unique`);
    return true;
  };
  raws.forEach((raw, i) => {
    const at: PathPart[] = ['routes', i];
    if (raw === undefined) {
      // Left out for a schema error of its own: its name, as written, still takes or repeats one,
      // so a later route of that name is said in the same pass (spec-checklist 2124).
      const name = Array.isArray(written) ? (written[i] as { name?: unknown } | null | undefined)?.name : undefined;
      if (typeof name === 'string') repeats(name, at);
      return;
    }
    if (repeats(raw.name, at)) {
      // Its own problems too, in the same pass (1913). It claims no path or group: the renaming
      // that fixes it may well be a copy's, whose path or group is about to change too.
      compileRoute(ctx, steps, raw, at, brokers, listeners, chains, unbound);
      return;
    }
    // A route with a problem elsewhere (a broken step, an unknown broker) still claims its path
    // when that is sound, so a second route on it is reported in the same pass (spec-checklist 663).
    const claim: RouteClaim = {};
    const route = compileRoute(ctx, steps, raw, at, brokers, listeners, chains, unbound, claim);
    const source = route?.from ?? claim.source;
    if (source?.type === 'listener') {
      const { listener, path } = source;
      const kind = ctx.registry.listeners.get(listeners.get(listener)!.kind)!;
      const word = kind.routesBy === 'topic' ? 'topic' : 'path';
      let claims = claimed.get(listener);
      if (!claims) claimed.set(listener, (claims = { paths: kind.pathClaims?.() ?? new EqualPaths(), route: new Map() }));
      const other = claims.paths.claim(path);
      if (other !== undefined) {
        const also = other === path ? '' : ` ('${other}' matches the same requests)`;
        ctx.report([...at, 'from', word], 'EG_CONFIG_CONFLICT', `listener '${listener}' ${word} '${path}' is already the source of route '${raws[claims.route.get(other)!]!.name}'${also}`);
        return;
      }
      claims.route.set(path, i);
    }
    // Likewise its group, when its `from` and group are sound (spec-checklist 1806).
    const consumer = route ? { from: route.from, to: route.to } : claim.consumer;
    if (consumer && !sharesConsumerWell(ctx, raw.name, consumer, at, consumers)) return;
    if (!route) return;
    // Subscribers of a path receive what every route forwarding there sends, so the routes
    // must agree on who may subscribe.
    const targets = raw.to === undefined ? [] : Array.isArray(raw.to) ? raw.to : [raw.to];
    for (const [j, t] of targets.entries()) {
      if (!('listener' in t)) continue;
      const claim = `${t.listener} ${t.path}`;
      const auth = canonical(t.auth ?? null);
      const other = forwardAuth.get(claim);
      if (other === undefined) forwardAuth.set(claim, { auth, route: raw.name });
      else if (other.auth !== auth) {
        ctx.report(
          Array.isArray(raw.to) ? [...at, 'to', j] : [...at, 'to'],
          'EG_CONFIG_CONFLICT',
          `route '${other.route}' also forwards to listener '${t.listener}' path '${t.path}' with ${other.auth === 'null' ? 'no auth' : 'a different auth'}; every route forwarding to a path must declare the same auth`,
          'key',
        );
        return;
      }
    }
    routes.set(route.name, route);
  });
  unbound.report(ctx);
  return routes;
}

/**
 * What of a route is sound whether or not the route compiles, so a clash with another route is
 * reported in the same pass as the route's own problems: its listener source (the path it claims),
 * and its broker source with a sound group and the kinds of its targets (the consumer it reads through).
 */
interface RouteClaim {
  source?: SourcePlan;
  consumer?: { from: SourcePlan; to: readonly { type: string }[] };
}

/** One route: its source, its steps and its targets, each reference checked; undefined when it has a problem (reported). */
function compileRoute(
  ctx: CompileContext,
  stepCompiler: StepCompiler,
  raw: RawRoute,
  at: PathPart[],
  brokers: Map<string, ComponentPlan>,
  listeners: Map<string, ListenerPlan>,
  chains: Map<string, CompiledChainStep[] | undefined>,
  /** Where the route's expressions read variables it does not bind (said once every route is compiled). */
  unbound: UnboundReads,
  /** What of the route is sound whether or not the route compiles (see RouteClaim). */
  claim: RouteClaim = {},
): RoutePlan | undefined {
  const errorsBefore = ctx.diagnostics.length;
  const usesBrokers = new Set<string>();
  const usesListeners = new Set<string>();
  // `topic`: checked also when the broker is left out for problems of its own options, in the same pass.
  const checkBroker = (name: string, path: PathPart[], topic?: [topic: string, use: 'publish' | 'consume', path: PathPart[]]) => {
    if (brokers.has(name)) {
      usesBrokers.add(name);
      return true;
    }
    if (!isHidden(ctx.hidden.brokers, name)) ctx.reportUndefined(path, 'broker', name, brokers.keys());
    else if (topic) ctx.checkTopic(name, ...topic);
    return false;
  };
  const checkTopic = (broker: string, topic: string, use: 'publish' | 'consume', path: PathPart[], hint?: string) => ctx.checkTopic(broker, topic, use, path, hint);
  const checkListener = (name: string, path: PathPart[]) => {
    if (listeners.has(name)) {
      usesListeners.add(name);
      return true;
    }
    if (!isHidden(ctx.hidden.listeners, name)) ctx.reportUndefined(path, 'listener', name, listeners.keys());
    return false;
  };

  // from (the schema guarantees a listener with a path, or a broker with a topic)
  let from: SourcePlan | undefined;
  const f = raw.from;
  // A listener's kind says whether its routes name a path or a topic and need a `to`: of one not
  // defined (or left out for its own problems) only that is said, not guesses from another kind.
  const listenerUnknown = 'listener' in f && !listeners.has(f.listener);
  // `from.cloudevents: structured` is an agreement, for sources whose messages cannot say they are
  // events: a broker's (MQTT 3.1.1 has no content type), a websocket frame. Other listeners' can.
  const agreedKind = 'listener' in f && f.cloudevents !== undefined && !listenerUnknown ? ctx.registry.listeners.get(listeners.get(f.listener)!.kind) : undefined;
  const agreementRefused = agreedKind !== undefined && !agreedKind.eventsByAgreement;
  if (agreementRefused && 'listener' in f) {
    ctx.report(
      [...at, 'from', 'cloudevents'],
      'EG_CONFIG_SCHEMA',
      `route '${raw.name}': 'cloudevents' (the agreement that every message is a structured CloudEvent) is for routes from a broker or a websocket listener; ${aKind(agreedKind.kind)} listener '${f.listener}' takes none${agreedKind.eventsTold ? `: ${agreedKind.eventsTold}` : ''}`,
      'key',
    );
  }
  if ('listener' in f && listenerUnknown) checkListener(f.listener, [...at, 'from', 'listener']);
  else if ('listener' in f && routesByTopic(ctx, f.listener, listeners)) {
    // A kafka listener: the route governs what its clients produce to a topic.
    if (f.path !== undefined)
      ctx.report([...at, 'from', 'path'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': listener '${f.listener}' takes Kafka clients, so the route names a 'topic', not a 'path'`, 'key');
    else if (f.topic === undefined) ctx.report([...at, 'from'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'from.listener' '${f.listener}' is a kafka listener and needs a 'topic'`, 'key');
    else if (checkListener(f.listener, [...at, 'from', 'listener'])) from = { type: 'listener', listener: f.listener, path: f.topic };
  } else if ('listener' in f) {
    if (f.topic !== undefined)
      ctx.report(
        [...at, 'from', 'topic'],
        'EG_CONFIG_SCHEMA',
        `route '${raw.name}': 'topic' belongs with 'from.broker' (or a kafka listener), not with ${listenerKindOf(f.listener, listeners)} listener '${f.listener}'`,
        'key',
      );
    else if (f.path === undefined) ctx.report([...at, 'from'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'from.listener' needs a 'path'`, 'key');
    else if (checkListener(f.listener, [...at, 'from', 'listener'])) {
      const kind = ctx.registry.listeners.get(listeners.get(f.listener)!.kind)!;
      if (!kind.acceptsPublish) ctx.report([...at, 'from', 'listener'], 'EG_CONFIG_REF', `listener '${f.listener}' (${kind.kind}) does not accept messages from clients`);
      else from = { type: 'listener', listener: f.listener, path: f.path, ...(f.cloudevents === 'structured' ? { structured: true } : {}) };
    }
  } else if (
    checkBroker(f.broker, [...at, 'from', 'broker'], [f.topic, 'consume', [...at, 'from', 'topic']]) &&
    checkTopic(f.broker, f.topic, 'consume', [...at, 'from', 'topic']) &&
    (f.qos === undefined || ctx.checkQos(f.broker, [...at, 'from', 'qos']))
  ) {
    const startFrom = f.startFrom ?? (f.fromBeginning === undefined ? undefined : f.fromBeginning ? 'earliest' : 'latest');
    from = {
      type: 'broker',
      broker: f.broker,
      topic: f.topic,
      group: f.group,
      startFrom,
      ...(f.qos === undefined ? {} : { qos: f.qos }),
      ...(f.cloudevents === 'structured' ? { structured: true } : {}),
    };
  }

  // `ack` gives a websocket client an answer per frame; every other source answers or acknowledges
  // each message anyway, so there the key would do nothing: a mistake (or a misreading) to point at.
  if (raw.ack === true && from) {
    const source = from.type === 'listener' ? ctx.registry.listeners.get(listeners.get(from.listener)!.kind) : undefined;
    if (!source?.acksFrames) {
      const instead =
        from.type === 'listener'
          ? `${listenerKindOf(from.listener, listeners)} listener answers every message anyway`
          : 'a route from a broker acknowledges each message to it once every target took it, always';
      ctx.report([...at, 'ack'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'ack' is for routes from a websocket listener (an answer per frame); ${instead}`, 'key');
    }
  }

  // The listener's own rule for what it can route (an HTTP path, a Kafka topic name), reported
  // with the route's other problems in one pass.
  if (from?.type === 'listener') {
    const kind = ctx.registry.listeners.get(listeners.get(from.listener)!.kind)!;
    const invalid = kind.checkPath?.(from.path);
    const word = kind.routesBy === 'topic' ? 'topic' : 'path';
    if (invalid !== undefined) ctx.report([...at, 'from', word], 'EG_CONFIG_SCHEMA', `route '${raw.name}': ${word} '${from.path}' cannot be routed: ${invalid}`);
    else claim.source = from;
  }

  // deadletter
  const dl = raw.deadletter;
  if (dl && checkBroker(dl.broker, [...at, 'deadletter', 'broker'], [dl.topic, 'publish', [...at, 'deadletter', 'topic']])) {
    checkTopic(dl.broker, dl.topic, 'publish', [...at, 'deadletter', 'topic']);
    if (dl.qos !== undefined) ctx.checkQos(dl.broker, [...at, 'deadletter', 'qos']);
  }

  // through
  const steps: CompiledChainStep[] = [];
  const through = raw.through === undefined ? [] : typeof raw.through === 'string' ? [raw.through] : raw.through;
  const throughAt: PathPart[] = [...at, 'through'];
  /** The kind of the listener the route reads from, when it limits what its routes may do (kafka). */
  const sourceKind = from?.type === 'listener' ? ctx.registry.listeners.get(listeners.get(from.listener)!.kind) : undefined;
  /** Every step compiled: with one missing (its problem reported), what the route's steps bind is not known. */
  let stepsComplete = true;
  through.forEach((item, j) => {
    const itemAt = typeof raw.through === 'string' ? throughAt : [...throughAt, j];
    const itemSteps = steps.length;
    if (item === undefined) {
      stepsComplete = false;
      return; // refused by the schema check (config/prune.ts): already reported
    }
    const compiled = typeof item === 'string' ? chains.get(item) : stepCompiler.compile([item], itemAt, true);
    if (typeof item === 'string' && !chains.has(item) && !isHidden(ctx.hidden.chains, item)) ctx.reportUndefined(itemAt, 'chain', item, chains.keys());
    if (compiled === undefined) {
      stepsComplete = false;
      return;
    }
    steps.push(...compiled);
    const why = sourceKind?.stepProblem
      ? steps
          .slice(itemSteps)
          .map((s) => sourceKind.stepProblem!(s.step, { to: raw.to !== undefined }))
          .find((w) => w !== undefined)
      : undefined;
    if (why !== undefined)
      ctx.report(
        itemAt,
        'EG_CONFIG_REF',
        `route '${raw.name}' is on ${sourceKind!.kind} listener '${from!.type === 'listener' ? from!.listener : ''}': ${why}`,
        typeof item === 'string' ? 'value' : 'key',
      );
  });
  for (const s of steps) for (const b of s.step.brokers ?? []) usesBrokers.add(b);
  if (from?.type === 'broker') {
    const clientSteps = [...new Set(steps.filter((s) => s.step.needsClient).map((s) => s.step.kind))];
    if (clientSteps.length > 0)
      ctx.report(
        throughAt,
        'EG_CONFIG_REF',
        `route '${raw.name}' consumes from a broker, but ${clientSteps.join(' and ')} steps check the client that sent a message, and broker messages have none; use them on routes from a listener`,
        'key',
      );
  }
  if (!raw.deadletter && steps.some((s) => s.step.needsRouteDeadletter)) {
    ctx.report(throughAt, 'EG_CONFIG_REF', `route '${raw.name}' uses a validate step with onInvalid: deadletter but neither the step nor the route has a 'deadletter: {broker, topic}'`, 'key');
  }

  // to
  if ('listener' in f && routesByTopic(ctx, f.listener, listeners)) {
    // Without `to`, records go on upstream in the client's batches; with it, one by one to the targets.
    if (raw.deadletter !== undefined && raw.to === undefined)
      ctx.report(
        [...at, 'deadletter'],
        'EG_CONFIG_SCHEMA',
        `route '${raw.name}' is on kafka listener '${f.listener}' and has no 'to': a record cannot leave a produce request that goes on upstream without breaking the producer's sequence numbers, so there is no dead-letter target; use onInvalid: reject or tag, or give the route a 'to'`,
        'key',
      );
  } else if (raw.to === undefined && !listenerUnknown) {
    ctx.report(at, 'EG_CONFIG_SCHEMA', `route '${raw.name}' needs a 'to' (a target, or a list of them)`, 'key');
  }
  const targetFiles: string[] = [];
  const targetExpressions = ctx.expressions.length;
  const targets = compileTargets(ctx, stepCompiler, raw.to, at, { checkBroker, checkListener, checkTopic }, listeners, targetFiles);
  warnUndeclaredFields(ctx, steps, ctx.expressions.slice(targetExpressions));
  warnHeaderSpelling(ctx, steps, ctx.expressions.slice(targetExpressions));
  unbound.note(raw.name, { request: requestPathOf(ctx, from, listeners) }, steps, ctx.expressions.slice(targetExpressions), stepsComplete);
  if (from?.type === 'broker') {
    // The group the route will consume as: its own, or the default from its name. A per-instance
    // group (every target a forward) ends with this process's id, known only at run time. A
    // route reading an amqp queue of `queues` consumes that queue itself: it has no group.
    let groupSound = true;
    if (ctx.readsWithoutGroup(from.broker, from.topic)) from = { ...from, groupless: true };
    else if (from.group !== undefined) groupSound = ctx.checkGroup(from.broker, from.group, from.topic, [...at, 'from', 'group']);
    else if (!groupPerInstance(from, targets)) groupSound = ctx.checkGroup(from.broker, consumerGroupName(raw.name, from, targets, ''), from.topic, [...at, 'name']);
    // The kinds of the targets as written: one refused by its own check still says whether the group is per instance.
    const written = raw.to === undefined ? [] : Array.isArray(raw.to) ? raw.to : [raw.to];
    if (groupSound) claim.consumer = { from, to: written.map((t) => ({ type: t !== undefined && 'listener' in t ? 'listener' : 'other' })) };
  }

  if (ctx.diagnostics.length > errorsBefore || !from) return undefined;
  const fileHashes = ctx.fileKeys([...steps.flatMap((s) => s.files), ...targetFiles]);
  const seen = new Map<string, number>();
  const stepIds = steps.map((s) => {
    const n = seen.get(s.key) ?? 0;
    seen.set(s.key, n + 1);
    return `${raw.name}\0${s.key}\0${n}`;
  });
  return {
    name: raw.name,
    // The expression limits are compiled into the route's expressions: a change to them rebuilds it.
    key: canonical({ raw, steps: steps.map((s) => s.key), files: fileHashes, contracts: steps.map((s) => s.inputs), expressions: ctx.limits }),
    from,
    steps: steps.map((s) => s.step),
    stepIds,
    to: targets,
    deadletter: raw.deadletter,
    ack: raw.ack ?? false,
    brokers: [...usesBrokers],
    listeners: [...usesListeners],
  };
}

/** A consume route's consumer as sharesConsumerWell keeps it: `at`, the route's place in the config. */
interface SharedConsumer {
  route: string;
  topic: string;
  group: string;
  at: PathPart[];
}

/**
 * Whether a consume route's group, where its broker makes it one consumer for several topics (a
 * JetStream durable consumer, an amqp route queue), is read by no earlier route of another topic,
 * nor under another group that names the same consumer; reported at the group (or the route's
 * name, for the default group) when it is.
 */
function sharesConsumerWell(ctx: CompileContext, name: string, route: { from: SourcePlan; to: readonly { type: string }[] }, at: PathPart[], consumers: Map<string, SharedConsumer>): boolean {
  const from = route.from;
  if (from.type !== 'broker' || from.groupless) return true;
  // A per-instance group is named after its route too (`eventgate-x.y-<instance>`): routes `x.y`
  // and `x_y` forwarding to listeners share a JetStream consumer on every instance as well. Its
  // remedy is a route's name: a `group` would make it one group for every instance.
  const perInstance = groupPerInstance(from, route.to);
  const group = consumerGroupName(name, from, route.to, perInstance ? '<instance>' : '');
  const remedy = perInstance ? 'rename one of the routes (its group on each instance is named after it)' : undefined;
  const found = ctx.sharedConsumer(from.broker, group, from.topic);
  if (found === undefined) return true;
  // The broker's name of the consumer spells the placeholder as it spells any group (`_instance_`).
  const shared = perInstance ? { ...found, name: found.name.replace("-_instance_'", "-<instance>'") } : found;
  const key = `${from.broker}\0${shared.name}`;
  const other = consumers.get(key);
  if (other === undefined) consumers.set(key, { route: name, topic: from.topic, group, at });
  if (other === undefined || (other.topic === from.topic && other.group === group)) return true;
  const where = from.group === undefined ? [...at, 'name'] : [...at, 'from', 'group'];
  // Quoted by where they were written: a topic or group from the environment is not shortened or escaped past its redaction.
  const topicOf = (p: PathPart[], topic: string) => ctx.quotedName(topic, [...p, 'from', 'topic']);
  const groupOf = (p: PathPart[], g: string) => ctx.quotedName(g, [...p, 'from', 'group']);
  // The server's name of the consumer may spell a group from the environment otherwise (NATS:
  // `grp.secret` is consumer `grp_secret`), which no redaction by value finds.
  const respelt = (p: PathPart[], g: string) => ctx.environmentVariablesOf([...p, 'from', 'group']) !== undefined && !shared.name.includes(g);
  const consumer = respelt(at, group) || respelt(other.at, other.group) ? shared.name.replace(/'[^']*'/, `'${REDACTED}'`) : shared.name;
  if (other.topic === from.topic) {
    // Two spellings of one consumer name (NATS: `a.b` and `a_b`, a name having no `.`): one group
    // to the server, which the routes would split, where two groups each read every message.
    // The names stay as they are: renaming would leave running consumers behind on an upgrade.
    ctx.report(
      where,
      'EG_CONFIG_CONFLICT',
      `route '${name}' reads ${topicOf(at, from.topic)} with group ${groupOf(at, group)}, as route '${other.route}' reads it with group ${groupOf(other.at, other.group)}: on broker '${from.broker}' both groups are ${consumer}, so the two routes would split its messages instead of each reading all of them; ${remedy ?? 'give one of them a group that names another consumer'}`,
    );
    return false;
  }
  ctx.report(
    where,
    'EG_CONFIG_CONFLICT',
    `route '${name}' reads ${topicOf(at, from.topic)} with group ${groupOf(at, group)}, as route '${other.route}' reads ${topicOf(other.at, other.topic)}: on broker '${from.broker}' that group is ${consumer}, ${shared.clash}; ${remedy ?? 'give one of them another group'}`,
  );
  return false;
}

/** The kind of a listener, for messages ('an http', 'a websocket'). */
function listenerKindOf(listener: string, listeners: Map<string, ListenerPlan>): string {
  const kind = listeners.get(listener)?.kind;
  return kind === undefined ? 'the' : aKind(kind);
}

/** Whether routes from `listener` name a topic rather than a path (kafka listeners). */
function routesByTopic(ctx: CompileContext, listener: string, listeners: Map<string, ListenerPlan>): boolean {
  const l = listeners.get(listener);
  return l !== undefined && ctx.registry.listeners.get(l.kind)?.routesBy === 'topic';
}

/** Paths that conflict only when equal (listeners without a router of their own: kafka topics). */
class EqualPaths implements PathClaims {
  private readonly paths = new Set<string>();
  claim(path: string): string | undefined {
    if (this.paths.has(path)) return path;
    this.paths.add(path);
    return undefined;
  }
}

/** The request path a route's messages come with (`$path`, `$query`), `none` for one from a broker or a kafka listener, undefined when its source has a problem. */
function requestPathOf(ctx: CompileContext, from: SourcePlan | undefined, listeners: Map<string, ListenerPlan>): RequestPath | undefined {
  if (from === undefined) return undefined;
  if (from.type === 'broker') return 'none';
  const kind = ctx.registry.listeners.get(listeners.get(from.listener)!.kind);
  return kind?.pathParameters ? { path: from.path, parameters: kind.pathParameters(from.path) } : 'none';
}
