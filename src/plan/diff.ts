import type { Plan } from './types.js';

export interface ComponentDiff {
  add: string[];
  /** Present in both with different options. */
  change: string[];
  remove: string[];
  keep: string[];
}

export interface PlanDiff {
  brokers: ComponentDiff;
  listeners: ComponentDiff & {
    /** Changed listeners whose socket options differ: they need a new socket. */
    rebind: string[];
  };
  /** Routes to rebuild: changed, or holding a broker or listener that is being replaced. */
  routes: ComponentDiff;
  admin: 'keep' | 'start' | 'restart' | 'stop';
}

function diffMaps<T extends { key: string }>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): ComponentDiff {
  const d: ComponentDiff = { add: [], change: [], remove: [], keep: [] };
  for (const [name, next] of after) {
    const prev = before.get(name);
    if (!prev) d.add.push(name);
    else if (prev.key !== next.key) d.change.push(name);
    else d.keep.push(name);
  }
  for (const name of before.keys()) if (!after.has(name)) d.remove.push(name);
  return d;
}

/**
 * What a reload must touch, per kind and by name (Vector's config diff). Compares canonical
 * values, never serialised config text, and takes referenced files' hashes into account through
 * the route keys.
 */
export function diffPlans(before: Plan | undefined, after: Plan, brokerReconfigurable: (name: string) => boolean): PlanDiff {
  const empty = new Map();
  const brokers = diffMaps(before?.brokers ?? empty, after.brokers);
  const listeners = diffMaps(before?.listeners ?? empty, after.listeners);
  const rebind = listeners.change.filter((name) => before!.listeners.get(name)!.socketKey !== after.listeners.get(name)!.socketKey);
  const replacedBrokers = new Set([...brokers.change.filter((b) => !brokerReconfigurable(b)), ...brokers.remove]);
  const replacedListeners = new Set([...rebind, ...listeners.remove]);
  const routes = diffMaps(before?.routes ?? empty, after.routes);
  // A kept route that holds a replaced component is rebuilt against the new one.
  const dependent = routes.keep.filter((name) => {
    const r = after.routes.get(name)!;
    return r.brokers.some((b) => replacedBrokers.has(b)) || r.listeners.some((l) => replacedListeners.has(l));
  });
  routes.keep = routes.keep.filter((n) => !dependent.includes(n));
  routes.change.push(...dependent);

  let admin: PlanDiff['admin'] = 'keep';
  if (!before?.admin && after.admin) admin = 'start';
  else if (before?.admin && !after.admin) admin = 'stop';
  else if (before?.admin && after.admin && before.admin.key !== after.admin.key) admin = 'restart';
  return { brokers, listeners: { ...listeners, rebind }, routes, admin };
}
