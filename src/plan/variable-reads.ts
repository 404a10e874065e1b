/**
 * The gateway's variables read where no route evaluating the expression binds them, so they have
 * no value for any message (the expression compiles: the names are the gateway's, and the routes
 * are what tell):
 * - `$principal` and `$claims` in a step before the route's first `auth` step, or in its targets
 *   (`key`, a computed `topic`, a webhook's `url`, `headers`, `orderBy`) on a route with none. A
 *   filter on them dropped everything, a ratelimit keyed on them keyed on the address.
 * - `$message` and `$channel` likewise before the route's first validate step naming an AsyncAPI
 *   message or channel, or in its targets on a route with none (the step's `binds`).
 * - `$path` and `$query` on a route that takes no request (from a broker, or a kafka listener),
 *   and `$path.name` where the route's path has no parameter `name`.
 * `$key` is not among them, though it is null for HTTP and WebSocket input and mqtt, amqp and
 * nats messages: the contract binds it for every expression (spec §3), so reading it is never an error.
 * A shared chain's expression is said only when none of the routes using it binds the variable:
 * one that stamps `$principal` where there is one serves routes with and without auth. Its
 * routes that lack it for different reasons (one from a broker, one whose path has no such
 * parameter) are told apart, each reason said of its own routes.
 */

import type { VariableRead } from '../expr/functions.js';
import { closest } from '../config/suggest.js';
import type { PathPart } from '../config/source.js';
import type { CompileContext } from './context.js';
import type { CompiledChainStep } from './steps.js';

/** What the route's source binds: its request path's parameters, or `none` for a route without one. */
export type RequestPath = { path: string; parameters: readonly string[] } | 'none';

/** A route's source, as its variables see it: undefined when the source has a problem of its own. */
export interface RouteSource {
  request: RequestPath | undefined;
}

interface Unbound {
  at: PathPart[];
  index: number;
  /** Some route using the expression binds the variable. */
  bound: boolean;
  /**
   * The routes that do not, by why not (Cause.why): a shared chain's routes may lack it for
   * different reasons (one from a broker, one whose path has no such parameter), each said of its own.
   */
  causes: Map<string, { routes: string[]; details: string[]; say: Cause['say'] }>;
}

/** Why a route does not bind a variable it reads, and what to say of the routes that do not for that reason. */
interface Cause {
  /** `no binding step`, `no request` or `no such parameter`. */
  why: string;
  /** What of this route the text names (its path, for `no such parameter`): each route's own, said together. */
  detail?: string;
  say: (routes: string[], details: string[]) => string;
}

/** The steps that bind a variable, for what is said where none does. */
const BINDERS: Record<string, string> = {
  principal: 'an auth step',
  claims: 'an auth step',
  message: 'a validate step naming an AsyncAPI message or channel',
  channel: 'a validate step naming an AsyncAPI message or channel',
};

/** The reads of every route, noted route by route (note()), said once all are compiled (report()). */
export class UnboundReads {
  private readonly reads = new Map<VariableRead, Unbound>();

  /** `complete`: every step of the route compiled; otherwise the one missing may bind any variable a step binds (its problem is said, and is to fix first). */
  note(route: string, source: RouteSource, steps: readonly CompiledChainStep[], targets: CompiledChainStep['expressions'], complete = true): void {
    const bound = new Set<string>(complete ? [] : Object.keys(BINDERS));
    const check = (expressions: CompiledChainStep['expressions'], where: string) => {
      for (const { expression, at } of expressions)
        for (const read of expression.placeReads) {
          const cause = unbound(read, bound, source, where);
          let entry = this.reads.get(read);
          if (!entry) this.reads.set(read, (entry = { at, index: read.index, bound: false, causes: new Map() }));
          if (cause === undefined) {
            entry.bound = true;
            continue;
          }
          const known = entry.causes.get(cause.why);
          if (known) {
            known.routes.push(route);
            known.details.push(cause.detail ?? '');
          } else entry.causes.set(cause.why, { routes: [route], details: [cause.detail ?? ''], say: cause.say });
        }
    };
    for (const s of steps) {
      // A ratelimit keyed on `$principal` runs before the auth step after it.
      check(s.expressions, 'before this step');
      for (const name of s.step.binds ?? []) bound.add(name);
    }
    check(targets, 'in its steps');
  }

  report(ctx: CompileContext): void {
    for (const u of this.reads.values()) {
      if (u.bound) continue;
      for (const { routes, details, say } of u.causes.values()) ctx.reportInValue(u.at, u.index, 'EG_CONFIG_EXPRESSION', say(routes, details));
    }
  }
}

/** `route 'a'`, `routes 'a' and 'b'` (the routes using a shared chain). */
function routesText(routes: string[]): string {
  const named = routes.map((r) => `'${r}'`);
  return named.length === 1 ? `route ${named[0]}` : `routes ${listed(named)}`;
}

/** `a, b and c`. */
export function listed(items: readonly string[]): string {
  return items.length === 1 ? items[0]! : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

function unbound(read: VariableRead, bound: ReadonlySet<string>, { request }: RouteSource, where: string): Cause | undefined {
  const { name, member } = read;
  const never = 'so it would read no value for every message';
  const binder = BINDERS[name];
  if (binder !== undefined) {
    if (bound.has(name)) return undefined;
    return {
      why: 'no binding step',
      say: (routes) => `$${name} has no value here: only ${binder} sets it, and ${routesText(routes)} ${routes.length === 1 ? 'has' : 'have'} none ${where}, ${never}`,
    };
  }
  if (request === undefined) return undefined; // the route's source has a problem of its own
  if (request === 'none')
    return {
      why: 'no request',
      say: (routes) =>
        `$${name} has no value here: ${routesText(routes)} ${routes.length === 1 ? 'takes' : 'take'} no HTTP or WebSocket request, so ${routes.length === 1 ? 'it has' : 'they have'} no ${name === 'path' ? 'path parameters' : 'query string'} and this would read no value for every message`,
    };
  if (name !== 'path' || member === undefined || request.parameters.includes(member)) return undefined;
  const like = closest(member, request.parameters);
  const has = request.parameters.length === 0 ? 'has no parameters' : `has no parameter '${member}', only ${request.parameters.map((p) => `:${p}`).join(', ')}`;
  const only = request.parameters.length === 0 ? 'no parameters' : `only ${request.parameters.map((p) => `:${p}`).join(', ')}`;
  // A shared chain's routes have paths of their own: each is named, with what it has instead.
  return {
    why: 'no such parameter',
    detail: `'${request.path}': ${only}`,
    say: (routes, details) =>
      routes.length === 1
        ? `$path.${member} has no value here: the path of route '${routes[0]}' ('${request.path}') ${has}${like === undefined ? '' : ` (did you mean $path.${like}?)`}, ${never}`
        : `$path.${member} has no value here: the paths of routes ${listed(routes.map((r, i) => `'${r}' (${details[i]})`))} have no parameter '${member}', ${never}`,
  };
}
