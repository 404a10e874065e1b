/**
 * The gateway's variables read where the route does not bind them, so they have no value for any
 * message (the expression compiles: the names are the gateway's, and the route is what tells):
 * - `$principal` and `$claims` in a step before the route's first `auth` step, or in its targets
 *   (`key`, a computed `topic`, a webhook's `url`, `headers`, `orderBy`) on a route with none. A
 *   filter on them dropped everything, a ratelimit keyed on them keyed on the address.
 * - `$path` and `$query` on a route that reads no request path (from a broker, or a kafka
 *   listener), and `$path.name` where the route's path has no parameter `name`.
 * A shared chain is checked for each route using it.
 */

import { closest } from '../config/suggest.js';
import type { CompileContext } from './context.js';
import type { CompiledChainStep } from './steps.js';

/** What the route's source binds: its request path's parameters, or `none` for a route without one. */
export type RequestPath = { path: string; parameters: readonly string[] } | 'none';

export function reportUnboundVariables(ctx: CompileContext, route: string, request: RequestPath | undefined, steps: readonly CompiledChainStep[], targets: CompiledChainStep['expressions']): void {
  let authed = false;
  const check = (expressions: CompiledChainStep['expressions'], where: string) => {
    for (const { expression, at } of expressions)
      for (const read of expression.placeReads) {
        const why = unbound(read.name, read.member, authed, request, route, where);
        if (why !== undefined) ctx.reportInValue(at, read.index, 'EG_CONFIG_EXPRESSION', why);
      }
  };
  for (const s of steps) {
    // A ratelimit keyed on `$principal` runs before the auth step after it.
    check(s.expressions, 'before this step');
    if (s.step.kind === 'auth') authed = true;
  }
  check(targets, 'in its steps');
}

function unbound(name: string, member: string | undefined, authed: boolean, request: RequestPath | undefined, route: string, where: string): string | undefined {
  if (name === 'principal' || name === 'claims') {
    return authed ? undefined : `$${name} has no value here: only an auth step sets it, and route '${route}' has none ${where}, so it would read no value for every message`;
  }
  if (request === undefined) return undefined; // the route's source has a problem of its own
  if (request === 'none')
    return `$${name} has no value here: route '${route}' takes no HTTP or WebSocket request, so it has no ${name === 'path' ? 'path parameters' : 'query string'} and this would read no value for every message`;
  if (name !== 'path' || member === undefined || request.parameters.includes(member)) return undefined;
  const like = closest(member, request.parameters);
  const has = request.parameters.length === 0 ? 'has no parameters' : `has no parameter '${member}', only ${request.parameters.map((p) => `:${p}`).join(', ')}`;
  return `$path.${member} has no value here: the path of route '${route}' ('${request.path}') ${has}${like === undefined ? '' : ` (did you mean $path.${like}?)`}, so it would read no value for every message`;
}
