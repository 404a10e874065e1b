import type { PathPart } from '../config/source.js';
import type { RoutePlan } from './types.js';

/**
 * Routes that feed the topic they read: from broker B topic T to B's T (or round several routes,
 * T1 → T2 → T1), none of them with a filter step. Every message then goes round for ever. Only a
 * warning: a loop with a filter, or one the user means (a retry loop that stops), can be intended,
 * and topics computed per message are not followed.
 */
export interface FeedbackLoop {
  /** Where to point: the `to` target of the first route of the loop that writes the next topic. */
  path: PathPart[];
  message: string;
}

/** `index` is the route's position in the config (`routes[index]`); `toIsList` whether its `to` is a list. */
export function feedbackLoops(routes: { index: number; route: RoutePlan; toIsList: boolean }[]): FeedbackLoop[] {
  const topic = (broker: string, name: string) => `${broker}\0${name}`;
  // Edges: a route without a filter, from the topic it reads to each topic it writes (by name).
  const edges = new Map<string, { route: string; path: PathPart[]; to: string }[]>();
  for (const { index, route, toIsList } of routes) {
    if (route.from.type !== 'broker' || route.steps.some((s) => s.kind === 'filter')) continue;
    const from = topic(route.from.broker, route.from.topic);
    route.to.forEach((t, j) => {
      if (t.type !== 'broker' || t.topicExpr !== undefined) return;
      const list = edges.get(from) ?? [];
      list.push({ route: route.name, path: ['routes', index, 'to', ...(toIsList ? [j] : [])], to: topic(t.broker, t.topic) });
      edges.set(from, list);
    });
  }
  const out: FeedbackLoop[] = [];
  const reported = new Set<string>();
  const describe = (t: string) => {
    const [broker, name] = t.split('\0');
    return `'${name}' of broker '${broker}'`;
  };
  // Depth-first from each topic; a cycle is reported once, by the set of routes in it.
  const walk = (start: string, at: string, trail: { route: string; path: PathPart[]; from: string; to: string }[]): void => {
    for (const e of edges.get(at) ?? []) {
      // Simple cycles only: no route and no topic twice.
      if (trail.some((s) => s.route === e.route || (s.from === e.to && e.to !== start))) continue;
      const next = [...trail, { route: e.route, path: e.path, from: at, to: e.to }];
      if (e.to === start) {
        const key = [...new Set(next.map((s) => s.route))].sort().join('\0');
        if (reported.has(key)) continue;
        reported.add(key);
        const message =
          next.length === 1
            ? `route '${e.route}' writes topic ${describe(start)}, the topic it reads, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic)`
            : `routes ${next.map((s) => `'${s.route}' (${describe(s.from)} to ${describe(s.to)})`).join(', ')} feed each other with no filter: every message goes round for ever (add a filter step that ends the loop)`;
        out.push({ path: next[0]!.path, message });
      } else {
        walk(start, e.to, next);
      }
    }
  };
  for (const start of edges.keys()) walk(start, start, []);
  return out;
}
