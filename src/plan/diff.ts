import type { KindRegistry } from '../kinds/registry.js';
import { canonical } from '../core/canonical.js';
import type { AdminPlan, ComponentPlan, ListenerPlan, Plan, RoutePlan } from './types.js';

/**
 * What a reload does to one named component. Each change carries the plans themselves (before
 * and after), so whoever applies it — the runtime (src/runtime/transition.ts) or `eventgate plan`
 * — needs no lookups by name.
 */
export type Change<P> =
  | { op: 'add'; name: string; after: P }
  | { op: 'remove'; name: string; before: P }
  /** Nothing changed: the running component stays as it is. */
  | { op: 'keep'; name: string; before: P; after: P }
  /** Changed options the running component takes in place (same socket, same clients, same connections). */
  | { op: 'reconfigure'; name: string; before: P; after: P }
  /** A new component replaces the running one; `why` says what made it necessary. */
  | { op: 'replace'; name: string; before: P; after: P; why: string };

export type ChangeOp = Change<unknown>['op'];

/** A reload, per kind and by name: everything applyTransition() needs, as data. */
export interface Transition {
  before: Plan | undefined;
  after: Plan;
  brokers: Change<ComponentPlan>[];
  listeners: Change<ListenerPlan>[];
  /** Routes have no in-place change: a changed route, or one holding a replaced or new component, is rebuilt. */
  routes: Change<RoutePlan>[];
  /** Undefined when neither plan has an admin server. */
  admin: Change<AdminPlan> | undefined;
}

type Keyed = { key: string };

export interface DiffOptions {
  /**
   * false when the brokers' options are not known (only their hashes): a changed broker is
   * reconfigured when both plans have its `replaceKey` and they are equal, else replaced.
   */
  reconfigureBrokers?: boolean;
}

/** The change lists of a transition by name, as `eventgate plan` reports them. */
export interface ChangeSummary {
  add: string[];
  /** Reconfigured in place or replaced. */
  change: string[];
  remove: string[];
  keep: string[];
}

/** Code point order, whatever the locale: a plan lists names so, and CI can diff two plans' output. */
export function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sorted(names: string[]): string[] {
  return names.sort(byCodePoint);
}

/**
 * A transition as name lists (the shape of `eventgate plan --format json`), each sorted by name:
 * the order of entries in the config is no change, so it does not show in a plan either.
 */
export function summarize(t: Transition): {
  brokers: ChangeSummary & { reconfigure: string[] };
  listeners: ChangeSummary & { rebind: string[] };
  routes: ChangeSummary;
  admin: 'keep' | 'start' | 'restart' | 'reconfigure' | 'stop';
} {
  const lists = <P>(changes: readonly Change<P>[]): ChangeSummary => ({
    add: sorted(named(changes, 'add')),
    change: sorted(changes.filter((c) => c.op === 'reconfigure' || c.op === 'replace').map((c) => c.name)),
    remove: sorted(named(changes, 'remove')),
    keep: sorted(named(changes, 'keep')),
  });
  const admin = t.admin === undefined ? 'keep' : ({ add: 'start', remove: 'stop', replace: 'restart', keep: 'keep', reconfigure: 'reconfigure' } as const)[t.admin.op];
  return {
    brokers: { ...lists(t.brokers), reconfigure: sorted(named(t.brokers, 'reconfigure')) },
    listeners: { ...lists(t.listeners), rebind: sorted(named(t.listeners, 'replace')) },
    routes: lists(t.routes),
    admin,
  };
}

function diffMap<P extends Keyed>(before: ReadonlyMap<string, P>, after: ReadonlyMap<string, P>, changed: (name: string, before: P, after: P) => Change<P>): Change<P>[] {
  const out: Change<P>[] = [];
  for (const [name, next] of after) {
    const prev = before.get(name);
    if (!prev) out.push({ op: 'add', name, after: next });
    else if (prev.key === next.key) out.push({ op: 'keep', name, before: prev, after: next });
    else out.push(changed(name, prev, next));
  }
  for (const [name, prev] of before) if (!after.has(name)) out.push({ op: 'remove', name, before: prev });
  return out;
}

/**
 * What a reload must touch, per kind and by name (Vector's config diff). Compares canonical
 * values, never serialised config text, and takes referenced files' hashes into account through
 * the keys. A broker whose kind can take the new options in place is reconfigured, else replaced;
 * a listener is replaced only when its socket options changed. A route is rebuilt when it changed
 * or when a component it holds is new.
 */
export function diffPlans(before: Plan | undefined, after: Plan, registry: KindRegistry, options: DiffOptions = {}): Transition {
  const empty = new Map();
  const inPlace = (prev: ComponentPlan, next: ComponentPlan) =>
    prev.kind === next.kind &&
    (options.reconfigureBrokers === false
      ? prev.replaceKey !== undefined && prev.replaceKey === next.replaceKey
      : registry.brokers.get(prev.kind)?.canReconfigure(prev.options, next.options) === true);
  const brokers = diffMap<ComponentPlan>(before?.brokers ?? empty, after.brokers, (name, prev, next) =>
    inPlace(prev, next)
      ? { op: 'reconfigure', name, before: prev, after: next }
      : { op: 'replace', name, before: prev, after: next, why: prev.kind === next.kind ? 'its options changed' : `its kind changed to ${next.kind}` },
  );
  const listeners = diffMap<ListenerPlan>(before?.listeners ?? empty, after.listeners, (name, prev, next) =>
    prev.socketKey === next.socketKey ? { op: 'reconfigure', name, before: prev, after: next } : { op: 'replace', name, before: prev, after: next, why: 'it needs a new socket' },
  );
  const fresh = (changes: Change<Keyed>[]) => new Set(changes.filter((c) => c.op === 'add' || c.op === 'replace').map((c) => c.name));
  const newBrokers = fresh(brokers);
  const newListeners = fresh(listeners);
  const routes = diffMap<RoutePlan>(before?.routes ?? empty, after.routes, (name, prev, next) => ({ op: 'replace', name, before: prev, after: next, why: 'it changed' })).map(
    (c): Change<RoutePlan> => {
      if (c.op !== 'keep') return c;
      // A kept route that holds a new component is rebuilt against it.
      const broker = c.after.brokers.find((b) => newBrokers.has(b));
      const listener = c.after.listeners.find((l) => newListeners.has(l));
      if (broker === undefined && listener === undefined) return c;
      return { op: 'replace', name: c.name, before: c.before, after: c.after, why: broker !== undefined ? `broker '${broker}' is replaced` : `listener '${listener}' is replaced` };
    },
  );
  return { before, after, brokers, listeners, routes, admin: diffAdmin(before?.admin, after.admin) };
}

function diffAdmin(prev: AdminPlan | undefined, next: AdminPlan | undefined): Change<AdminPlan> | undefined {
  if (!prev && !next) return undefined;
  if (!prev) return { op: 'add', name: 'admin', after: next! };
  if (!next) return { op: 'remove', name: 'admin', before: prev };
  if (prev.key !== next.key) return { op: 'replace', name: 'admin', before: prev, after: next, why: 'its port or host changed' };
  return canonical(prev) === canonical(next) ? { op: 'keep', name: 'admin', before: prev, after: next } : { op: 'reconfigure', name: 'admin', before: prev, after: next };
}

/** The names of `changes` with op `op` (for logs, tests and `eventgate plan`). */
export function named<P>(changes: readonly Change<P>[], op: ChangeOp): string[] {
  return changes.filter((c) => c.op === op).map((c) => c.name);
}
