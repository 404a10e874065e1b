import type { Diagnostic } from './diagnostics.js';
import { formatPath } from './diagnostics.js';

/** Names removed from a config because their own part of it is invalid; `'all'` when the whole section is. */
export interface Hidden {
  brokers: Set<string> | 'all';
  listeners: Set<string> | 'all';
  chains: Set<string> | 'all';
  /** `asyncapi:` was invalid: references to AsyncAPI messages cannot be checked. */
  asyncapi: boolean;
}

export interface Pruned {
  /** The config without the invalid parts; routes that were removed are left as holes (`undefined`) so indexes, and so positions, stay right. */
  value: Record<string, unknown>;
  hidden: Hidden;
}

const SECTIONS = ['brokers', 'listeners', 'chains'] as const;

/**
 * So `validate` reports every problem in one pass: the parts of the config that failed the
 * schema (or miss an environment variable) are taken out, and the rest can still be compiled —
 * a bad JSONata expression or an unknown broker further down is found along with a key typo.
 * References to what was taken out are not reported again (the part itself already was).
 * Undefined when nothing can be compiled (the document is not a map).
 */
export function pruneInvalid(config: unknown, diagnostics: readonly Diagnostic[]): Pruned | undefined {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) return undefined;
  const value: Record<string, unknown> = { ...(config as Record<string, unknown>) };
  const hidden: Hidden = { brokers: new Set(), listeners: new Set(), chains: new Set(), asyncapi: false };
  for (const s of SECTIONS) if (value[s] !== undefined) value[s] = isMap(value[s]) ? { ...(value[s] as object) } : value[s];
  if (Array.isArray(value.routes)) value.routes = [...value.routes];
  /** Step lists already copied here, so the caller's config is never changed. */
  const copied = new WeakSet<unknown[]>();
  const under = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}.`) || path.startsWith(`${prefix}[`);

  for (const d of diagnostics) {
    const path = d.path;
    if (path === '') continue;
    let handled = false;
    for (const s of SECTIONS) {
      if (!under(path, s)) continue;
      handled = true;
      const section = value[s];
      if (path === s || !isMap(section)) {
        delete value[s];
        hidden[s] = 'all';
        break;
      }
      // The longest name that the path starts with: names may contain dots.
      const name = Object.keys(section as object)
        .filter((k) => under(path, formatPath([s, k])))
        .sort((a, b) => b.length - a.length)[0];
      if (name !== undefined && hidden[s] !== 'all') {
        // A bad step leaves a hole in its chain, not a missing chain: the chain's other steps are
        // still checked (an unknown step must not hide a broken expression beside it).
        const step = s === 'chains' ? /^\[(\d+)\]/.exec(path.slice(formatPath([s, name]).length)) : null;
        const chain = (section as Record<string, unknown>)[name];
        if (step && Array.isArray(chain)) (section as Record<string, unknown>)[name] = withHole(chain, Number(step[1]), copied);
        else {
          delete (section as Record<string, unknown>)[name];
          hidden[s].add(name);
        }
      }
      break;
    }
    if (handled) continue;
    if (under(path, 'routes')) {
      const m = /^routes\[(\d+)\]/.exec(path);
      const routes = value.routes;
      const route = m && Array.isArray(routes) ? (routes[Number(m[1])] as Record<string, unknown> | undefined) : undefined;
      // A bad inline step of a route leaves a hole in its `through`, as in a chain.
      const step = route && /^routes\[\d+\]\.through\[(\d+)\]/.exec(path);
      if (step && route && Array.isArray(route.through)) (routes as unknown[])[Number(m![1])] = { ...route, through: withHole(route.through, Number(step[1]), copied) };
      else if (m && Array.isArray(routes)) routes[Number(m[1])] = undefined;
      else delete value.routes;
      continue;
    }
    if (under(path, 'asyncapi')) {
      delete value.asyncapi;
      hidden.asyncapi = true;
      continue;
    }
    // admin, log, expressions, ...: compile with their defaults.
    const top = /^[^.[]+/.exec(path)?.[0];
    if (top !== undefined && top !== 'version') delete value[top];
  }
  return { value, hidden };
}

/** `list` with item `i` taken out (left `undefined`, so the other items keep their indexes and positions). */
function withHole(list: unknown[], i: number, copied: WeakSet<unknown[]>): unknown[] {
  const out = copied.has(list) ? list : [...list];
  copied.add(out);
  out[i] = undefined;
  return out;
}

export function isHidden(set: Set<string> | 'all', name: string): boolean {
  return set === 'all' || set.has(name);
}

function isMap(v: unknown): boolean {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
