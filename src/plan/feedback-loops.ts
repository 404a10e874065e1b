import type { PathPart } from '../config/source.js';
import type { RoutePlan } from './types.js';

/**
 * Routes that feed the topic they read: from broker B topic T to B's T (or round several routes,
 * T1 → T2 → T1), none of them with a filter step. Every message then goes round for ever. Only a
 * warning: a loop with a filter, or one the user means (a retry loop that stops), can be intended,
 * and topics computed per message are not followed. A route reading a wildcard filter (MQTT `#`,
 * NATS `>`, an AMQP pattern) reads every topic the filter matches (`reads`: its broker kind's
 * BrokerKind.topicsRead); before, only the same name counted, and a route copying `#` to `copies`
 * of the same MQTT server was said to be fine.
 */
export interface FeedbackLoop {
  /** Where to point: the `to` target of the first route of the loop that writes the next topic. */
  path: PathPart[];
  message: string;
}

/** Whether a route reading `from` on `broker` gets messages published to `topic` there, beyond `from` itself; undefined when not known. */
export type ReadsTopic = (broker: string, from: string) => ((topic: string) => boolean) | undefined;

interface Topic {
  broker: string;
  name: string;
}

interface Node {
  route: string;
  from: Topic;
  matches?: (topic: string) => boolean;
  targets: { path: PathPart[]; to: Topic }[];
}

/**
 * Bounds on the search: routes that feed each other densely (n routes each writing the others'
 * topics) hold a number of simple cycles that grows as n!, and the search ran in the compile of
 * every validate and reload: 10 s for 9 such routes, minutes for 10, the gateway's event loop held
 * meanwhile. The first loops found are warned of, then the search stops and says so.
 */
const MAX_LOOPS = 20;
const MAX_STEPS = 100_000;

/** `index` is the route's position in the config (`routes[index]`); `toIsList` whether its `to` is a list. */
export function feedbackLoops(routes: { index: number; route: RoutePlan; toIsList: boolean }[], reads?: ReadsTopic): FeedbackLoop[] {
  // A route without a filter, with the topics it writes by name.
  const nodes: Node[] = [];
  for (const { index, route, toIsList } of routes) {
    if (route.from.type !== 'broker' || route.steps.some((s) => s.kind === 'filter')) continue;
    const targets = route.to.flatMap((t, j) =>
      t.type !== 'broker' || t.topicExpr !== undefined ? [] : [{ path: ['routes', index, 'to', ...(toIsList ? [j] : [])] as PathPart[], to: { broker: t.broker, name: t.topic } }],
    );
    if (targets.length > 0) nodes.push({ route: route.name, from: { broker: route.from.broker, name: route.from.topic }, matches: reads?.(route.from.broker, route.from.topic), targets });
  }
  const readBy = (n: Node, t: Topic) => n.from.broker === t.broker && (n.from.name === t.name || n.matches?.(t.name) === true);
  const out: FeedbackLoop[] = [];
  const reported = new Set<string>();
  const describe = (t: Topic) => `'${t.name}' of broker '${t.broker}'`;
  let steps = 0;
  let cut = false;
  const stopped = () => (cut ||= out.length >= MAX_LOOPS || steps > MAX_STEPS);
  // Depth-first from each route; a cycle is reported once, by the set of routes in it.
  const walk = (start: Node, at: Node, trail: { node: Node; path: PathPart[]; to: Topic }[]): void => {
    for (const { path, to } of at.targets) {
      if (stopped()) return;
      const next = [...trail, { node: at, path, to }];
      if (readBy(start, to)) {
        const key = [...new Set(next.map((s) => s.node.route))].sort().join('\0');
        if (reported.has(key)) continue;
        reported.add(key);
        const reads = (s: (typeof next)[number]) => (s.node.from.name === s.to.name ? 'the topic it reads' : `which the topic it reads ('${s.node.from.name}') matches`);
        const message =
          next.length === 1
            ? `route '${at.route}' writes topic ${describe(to)}, ${reads(next[0]!)}, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic)`
            : `routes ${next.map((s) => `'${s.node.route}' (${describe(s.node.from)} to ${describe(s.to)})`).join(', ')} feed each other with no filter: every message goes round for ever (add a filter step that ends the loop)`;
        out.push({ path: next[0]!.path, message });
        continue;
      }
      // Simple cycles only: no route twice.
      for (const n of nodes) {
        steps++;
        if (n !== start && !trail.some((s) => s.node === n) && n !== at && readBy(n, to)) walk(start, n, next);
      }
    }
  };
  for (const start of nodes) walk(start, start, []);
  if (cut && out.length > 0) {
    const last = out[out.length - 1]!;
    last.message += '; the search for loops stopped here: the routes feed each other in too many ways to list them all, so look for more among them';
  }
  return out;
}
